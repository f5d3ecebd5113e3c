/**
 * API tokens (admin): create for reviewers, devices and workers; revoke. A new token's raw
 * value is shown once, with a copy button, and leaves the screen when that token is revoked;
 * the token this tab is signed in with is marked (the cloud refuses to revoke it).
 */
import { type FormEvent, useState } from "react";
import type { ApiToken, Role } from "../api/types";
import { storedToken, useSession } from "../auth";
import { Empty, ErrorBox, Gate, ago, useLoad, when } from "../components/ui";

export function TokensPage() {
  const { client } = useSession();
  const tokens = useLoad(() => client.tokens(), [client]);
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("reviewer");
  const [created, setCreated] = useState<ApiToken | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [copied, setCopied] = useState(false);
  const mine = storedToken();
  const isMine = (token: ApiToken) => Boolean(mine && token.snippet && mine.startsWith(token.snippet));

  const copy = async (raw: string) => {
    try {
      await navigator.clipboard.writeText(raw);
      setCopied(true);
    } catch {
      setError(new Error("The browser did not allow copying: select the token and copy it by hand."));
    }
  };

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!name.trim()) return setError(new Error("Name the token after who or what will use it."));
    setError(null);
    try {
      setCreated(await client.createToken(name.trim(), role));
      setCopied(false);
      setName("");
      tokens.reload();
    } catch (err) {
      setError(err);
    }
  };

  const revoke = async (token: ApiToken) => {
    if (!window.confirm(`Revoke the token “${token.name}”? Whatever uses it stops working at once.`)) return;
    try {
      await client.deleteToken(token.id);
      // A revoked token's raw value has no business staying on screen.
      if (created?.id === token.id) setCreated(null);
      tokens.reload();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <section aria-label="Tokens">
      <h1>API tokens</h1>
      <form className="card form inline" onSubmit={submit} aria-label="New token">
        <label>
          Name
          <input value={name} onChange={(e) => setName(e.target.value)} placeholder="alice" />
        </label>
        <label>
          Role
          <select value={role} onChange={(e) => setRole(e.target.value as Role)}>
            <option value="reviewer">reviewer</option>
            <option value="admin">admin</option>
            <option value="device">device</option>
            <option value="worker">worker</option>
          </select>
        </label>
        <button type="submit" className="primary">
          Create token
        </button>
      </form>
      {created?.token && (
        <div className="notice" role="status">
          <strong>Copy this token now; it is not shown again:</strong>
          <span className="row">
            <code className="mono token-raw" data-testid="new-token">
              {created.token}
            </code>
            <button type="button" onClick={() => copy(created.token ?? "")}>
              {copied ? "Copied" : "Copy"}
            </button>
          </span>
        </div>
      )}
      {error !== null && <ErrorBox error={error} />}
      <Gate state={tokens} what="tokens">
        {(list) =>
          list.length === 0 ? (
            <Empty title="No tokens." />
          ) : (
            <div className="table-wrap">
            <table className="table" data-testid="tokens-table">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Role</th>
                  <th>Token</th>
                  <th>Created</th>
                  <th>Last used</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {list.map((token) => (
                  <tr key={token.id} data-token-id={token.id}>
                    <td>
                      {token.name} {isMine(token) && <span className="badge active">you (this tab)</span>}
                    </td>
                    <td>{token.role}</td>
                    <td className="mono">{token.snippet ?? "…"}</td>
                    <td>{when(token.created_at)}</td>
                    <td>{token.last_used_at ? ago(token.last_used_at) : "never"}</td>
                    <td>
                      {!isMine(token) && (
                        <button type="button" className="danger" onClick={() => revoke(token)}>
                          Revoke
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            </div>
          )
        }
      </Gate>
    </section>
  );
}
