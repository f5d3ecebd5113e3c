/** An image from the cloud API: fetched with the token header, shown through an object URL. */
import { useEffect, useState } from "react";
import { useSession } from "../auth";

export function AuthImage({ path, alt, className }: { path: string; alt: string; className?: string }) {
  const { client } = useSession();
  const [url, setUrl] = useState<string | null>(null);
  const [failed, setFailed] = useState(false);

  useEffect(() => {
    let live = true;
    let made: string | null = null;
    setUrl(null);
    setFailed(false);
    client.imageObjectUrl(path).then(
      (objectUrl) => {
        made = objectUrl;
        if (live) setUrl(objectUrl);
        else URL.revokeObjectURL(objectUrl);
      },
      () => live && setFailed(true),
    );
    return () => {
      live = false;
      if (made) URL.revokeObjectURL(made);
    };
  }, [client, path]);

  if (failed) return <div className={`thumb-missing ${className ?? ""}`}>no image</div>;
  if (!url) return <div className={`thumb-loading ${className ?? ""}`} aria-label="loading image" />;
  return <img src={url} alt={alt} className={className} />;
}
