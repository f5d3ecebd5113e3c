/** The shell: sign-in, role-aware navigation and the page table. */
import { useCallback, useEffect, useMemo, useState } from "react";
import { ApiError, Client } from "./api/client";
import type { Me } from "./api/types";
import { CAN, type Session, SessionContext, storedToken, storeToken } from "./auth";
import { ErrorBox, Loading } from "./components/ui";
import { DetectorPage } from "./pages/DetectorPage";
import { DetectorsPage } from "./pages/DetectorsPage";
import { EdgePage } from "./pages/EdgePage";
import { EdgesPage } from "./pages/EdgesPage";
import { ModelsPage } from "./pages/ModelsPage";
import { ReviewPage } from "./pages/ReviewPage";
import { SignInPage } from "./pages/SignInPage";
import { TokensPage } from "./pages/TokensPage";
import { TrainingJobPage } from "./pages/TrainingJobPage";
import { Link, match, navigate, useHashPath } from "./router";

interface NavItem {
  path: string;
  label: string;
  allowed: keyof typeof CAN;
}

const NAV: NavItem[] = [
  { path: "/review", label: "Review queue", allowed: "review" },
  { path: "/detectors", label: "Detectors", allowed: "detectors" },
  { path: "/edges", label: "Edges", allowed: "edges" },
  { path: "/tokens", label: "Tokens", allowed: "tokens" },
];

function Page({ path, me }: { path: string; me: Me }) {
  let params: Record<string, string> | null;
  if (match("/review", path)) return <ReviewPage />;
  if (match("/detectors", path)) return <DetectorsPage />;
  if ((params = match("/detectors/:id", path))) return <DetectorPage detectorId={params.id} />;
  if ((params = match("/detectors/:id/models", path))) return <ModelsPage detectorId={params.id} />;
  if ((params = match("/training-jobs/:id", path))) return <TrainingJobPage jobId={params.id} />;
  if (match("/edges", path)) return <EdgesPage />;
  if ((params = match("/edges/:id", path))) return <EdgePage edgeId={params.id} />;
  if (match("/tokens", path)) return <TokensPage />;
  const home = NAV.find((item) => CAN[item.allowed](me.role));
  return (
    <div className="notice empty">
      <strong>There is no page at {path}.</strong>
      {home && <Link to={home.path}>Go to {home.label}</Link>}
    </div>
  );
}

export function App() {
  const path = useHashPath();
  const [token, setToken] = useState<string | null>(storedToken);
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<unknown>(null);
  const client = useMemo(() => (token ? new Client(token) : null), [token]);

  const signOut = useCallback(() => {
    storeToken(null);
    setToken(null);
    setMe(null);
    setError(null);
  }, []);

  useEffect(() => {
    if (!client) return;
    let live = true;
    setError(null);
    client.me().then(
      (value) => live && setMe(value),
      (err: unknown) => {
        if (!live) return;
        if (err instanceof ApiError && err.status === 401) signOut();
        else setError(err);
      },
    );
    return () => {
      live = false;
    };
  }, [client, signOut]);

  const signIn = async (candidate: string): Promise<string | null> => {
    try {
      const value = await new Client(candidate).me();
      storeToken(candidate);
      setToken(candidate);
      setMe(value);
      if (value.role === "reviewer" || value.role === "admin") {
        if (path === "/" || path === "") navigate(value.role === "admin" ? "/detectors" : "/review");
      }
      return null;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return "The cloud refused this token. Check that you pasted all of it, or ask an admin for a new one.";
      if (err instanceof ApiError) return `${err.detail}. ${err.hint}`;
      return String(err);
    }
  };

  if (!client) return <SignInPage onSignIn={signIn} />;
  if (error) {
    return (
      <main className="page">
        <ErrorBox error={error} onRetry={() => setToken(storedToken())} />
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </main>
    );
  }
  if (!me) return <Loading what="your account" />;
  const session: Session = { client, me, signOut, signInAgain: signIn };
  const nav = NAV.filter((item) => CAN[item.allowed](me.role));
  // Pages of a section the role may not use; unknown paths fall through to "no page here".
  const forbidden = NAV.some((item) => path.startsWith(item.path) && !CAN[item.allowed](me.role));
  const allowedHere = !forbidden;

  return (
    <SessionContext.Provider value={session}>
      <header className="topbar">
        <span className="brand">IntelliOptics</span>
        <nav aria-label="Main">
          {nav.map((item) => (
            <Link key={item.path} to={item.path} className={path.startsWith(item.path) ? "active" : ""}>
              {item.label}
            </Link>
          ))}
        </nav>
        <span className="whoami" title={me.email}>
          {me.username} · {me.role}
        </span>
        <button type="button" className="link" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main className="page">
        {nav.length === 0 ? (
          <div className="notice empty">
            <strong>This token is for a {me.role}, not a person.</strong>
            <span>Sign out and sign in with a reviewer or admin token (an admin creates them under Tokens).</span>
          </div>
        ) : !allowedHere ? (
          <div className="notice empty">
            <strong>Your role ({me.role}) cannot open this page.</strong>
            <Link to={nav[0].path}>Go to {nav[0].label}</Link>
          </div>
        ) : path === "/" ? (
          <Redirect to={nav[0].path} />
        ) : (
          <Page path={path} me={me} />
        )}
      </main>
    </SessionContext.Provider>
  );
}

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to), [to]);
  return null;
}
