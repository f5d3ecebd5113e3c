"""The generated development set: deterministic by seed, one surface when asked."""

from __future__ import annotations

import numpy as np
import pytest

from intellioptics_training.synthetic import SURFACES, generate


def test_same_seed_same_pixels_and_labels_alternate() -> None:
    first = list(generate("binary", 3, seed=4))
    second = list(generate("binary", 3, seed=4))
    assert [g.label for g in first] == ["NO", "YES"] * 3
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(first, second, strict=True))


def test_one_surface_throughout_and_the_mixed_set_is_unchanged_by_the_option() -> None:
    leather = list(generate("binary", 4, seed=9, surface="leather"))
    assert {g.surface for g in leather} == {"leather"}
    mixed = list(generate("binary", 4, seed=9))
    assert len({g.surface for g in mixed}) > 1
    # Drawing the surface still consumes the same random numbers, so each mixed image
    # is pixel-identical to the same image of a set fixed to its surface.
    for index, image in enumerate(mixed[:3]):
        fixed = list(generate("binary", 4, seed=9, surface=image.surface))[index]
        assert np.array_equal(image.rgb, fixed.rgb)


def test_unknown_surface_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="leather"):
        next(generate("binary", 1, seed=0, surface="marble"))
    assert "leather" in SURFACES


def test_dataset_generate_takes_one_surface_for_the_binary_kind_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from intellioptics_training.cli import main

    out = tmp_path / "one"
    args = ["dataset", "generate", str(out), "--kind", "binary", "--n-per-class", "3", "--surface", "wood"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in out.rglob("*.png"))
    assert len(names) == 6 and all(name.startswith("wood_") for name in names), names
    mixed = tmp_path / "mixed"
    assert CliRunner().invoke(main, ["dataset", "generate", str(mixed), "--n-per-class", "6"]).exit_code == 0
    assert len({path.name.split("_")[0] for path in mixed.rglob("*.png")}) > 1
    bad = CliRunner().invoke(main, ["dataset", "generate", str(tmp_path / "x"), "--surface", "marble"])
    assert bad.exit_code == 2 and "leather" in bad.output
