import { type FormEvent, useState } from "react";

export function SignInPage({ onSignIn }: { onSignIn: (token: string) => Promise<string | null> }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const value = token.trim();
    if (!value) {
      setError("Paste an API token first.");
      return;
    }
    setBusy(true);
    setError(await onSignIn(value));
    setBusy(false);
  };

  return (
    <main className="signin">
      <form onSubmit={submit} className="card">
        <h1>IntelliOptics</h1>
        <p>
          Sign in with an API token. An admin creates tokens under Tokens; <code>make run</code> prints the first one.
        </p>
        <label htmlFor="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          autoFocus
          value={token}
          onChange={(event) => setToken(event.target.value)}
        />
        {error && (
          <p className="notice error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
        <p className="muted">The token is kept in this tab only and is forgotten when the tab closes.</p>
      </form>
    </main>
  );
}
