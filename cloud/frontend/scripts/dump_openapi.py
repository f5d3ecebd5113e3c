"""Print the cloud API's OpenAPI document, built from the app itself (no server, no database).

Used by ``npm run gen:api`` (``make frontend-client``) to regenerate src/api/schema.d.ts.
"""

from __future__ import annotations

import json
import sys

from intellioptics_cloud.app import create_app


def main() -> None:
    json.dump(create_app().openapi(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
