/** API tokens (admin): create for reviewers, devices and workers; revoke. */
import { type FormEvent, useState } from "react";
import type { ApiToken, Role } from "../api/types";
import { useSession } from "../auth";
import { Empty, ErrorBox, Gate, ago, useLoad, when } from "../components/ui";

export function TokensPage() {
  const { client } = useSession();
  const tokens = useLoad(() => client.tokens(), [client]);
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("reviewer");
  const [created, setCreated] = useState<ApiToken | null>(null);
  const [error, setError] = useState<unknown>(null);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!name.trim()) return setError(new Error("Name the token after who or what will use it."));
    setError(null);
    try {
      setCreated(await client.createToken(name.trim(), role));
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
          <strong>Copy this token now; it is not shown again:</strong> <code className="mono">{created.token}</code>
        </div>
      )}
      {error !== null && <ErrorBox error={error} />}
      <Gate state={tokens} what="tokens">
        {(list) =>
          list.length === 0 ? (
            <Empty title="No tokens." />
          ) : (
            <table className="table">
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
                  <tr key={token.id}>
                    <td>{token.name}</td>
                    <td>{token.role}</td>
                    <td className="mono">{token.snippet ?? "…"}</td>
                    <td>{when(token.created_at)}</td>
                    <td>{token.last_used_at ? ago(token.last_used_at) : "never"}</td>
                    <td>
                      <button type="button" className="danger" onClick={() => revoke(token)}>
                        Revoke
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Gate>
    </section>
  );
}
