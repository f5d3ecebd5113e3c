/** Asked when the cloud refused the reviewer's token mid-session: the unsaved labels wait for it. */
import { type FormEvent, useState } from "react";

export function SignInAgain({
  unsaved,
  onSignIn,
}: {
  unsaved: number;
  onSignIn?: (token: string) => Promise<string | null>;
}) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!onSignIn || !token.trim()) return;
    setBusy(true);
    const failed = await onSignIn(token.trim());
    setBusy(false);
    setError(failed);
    if (!failed) setToken("");
  };

  return (
    <form className="notice error signin-again" aria-label="Sign in again" onSubmit={submit}>
      <strong role="alert">Your token was refused (revoked or expired): sign in again.</strong>
      <span>
        {unsaved === 1 ? "1 label is" : `${unsaved} labels are`} kept in this tab, not saved yet; they are sent as soon
        as you sign in. Do not close the tab.
      </span>
      <div className="row">
        <input
          id="reauth-token"
          type="password"
          autoComplete="off"
          placeholder="io_…"
          aria-label="API token"
          value={token}
          onChange={(event) => setToken(event.target.value)}
        />
        <button type="submit" className="primary" disabled={busy || !token.trim() || !onSignIn}>
          Sign in and send
        </button>
      </div>
      {error && <span className="small">{error}</span>}
    </form>
  );
}
