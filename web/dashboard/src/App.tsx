import { lazy, Suspense, useEffect, useState, useSyncExternalStore } from "react";
import { api } from "./api/client";
import { Link } from "./components/ui";
import { ApiKeysPage } from "./pages/ApiKeys";
import { navigate, useLocation } from "./router";
import { session } from "./session";

// The API keys page (where a session lands) is in the entry chunk; the other pages are
// chunks of their own, fetched on first visit.
const AuthPage = lazy(() => import("./pages/Auth").then((m) => ({ default: m.AuthPage })));
const BillingPage = lazy(() => import("./pages/Billing").then((m) => ({ default: m.BillingPage })));
const WebhooksPage = lazy(() => import("./pages/Webhooks").then((m) => ({ default: m.WebhooksPage })));
// The same words as index.html's static placeholder: the first paint does not change.
const loading = <p className="boot">Loading the dashboard…</p>;

function useSession() {
  return useSyncExternalStore(
    (fn) => session.subscribe(fn),
    () => `${session.accessToken ?? ""}|${session.mode}`,
  );
}

const NAV = [
  { to: "/settings/developers/api-keys", label: "API keys" },
  { to: "/settings/webhooks", label: "Webhooks" },
  { to: "/settings/billing", label: "Billing" },
];

export function App() {
  useSession();
  const { path, search } = useLocation();
  const [booted, setBooted] = useState(false);

  useEffect(() => {
    // A reload keeps the session through the HttpOnly refresh cookie alone.
    void session.refresh().finally(() => setBooted(true));
  }, []);

  const publicPage = path === "/signin" || path === "/signup";
  useEffect(() => {
    if (!booted) return;
    if (!session.accessToken && !publicPage) navigate("/signin", true);
    if (session.accessToken && (publicPage || path === "/")) navigate("/settings/developers/api-keys", true);
  }, [booted, path, publicPage, session.accessToken]);

  if (!booted) return loading;
  if (publicPage)
    return (
      <Suspense fallback={loading}>
        <AuthPage key={path} kind={path === "/signup" ? "signup" : "signin"} />
      </Suspense>
    );
  if (!session.accessToken) return null;

  let page;
  if (path === "/settings/developers/api-keys") page = <ApiKeysPage key={session.mode} />;
  else if (path === "/settings/webhooks") page = <WebhooksPage key={session.mode} />;
  else if (path.startsWith("/settings/webhooks/")) page = <WebhooksPage key={session.mode} endpointId={path.split("/")[3]} />;
  else if (path === "/settings/billing") page = <BillingPage checkout={search.get("checkout")} />;
  else page = <h1>Page not found</h1>;

  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">PenguinMails</span>
        <nav aria-label="Settings">
          {NAV.map((n) => (
            <Link key={n.to} to={n.to} current={path.startsWith(n.to)}>
              {n.label}
            </Link>
          ))}
        </nav>
        <label className="switch mode">
          <input
            type="checkbox"
            role="switch"
            checked={session.mode === "test"}
            onChange={(e) => session.setMode(e.target.checked ? "test" : "live")}
          />
          Test mode
        </label>
        <button
          type="button"
          onClick={async () => {
            await api.POST("/api/v1/auth/logout", {} as never).catch(() => undefined);
            session.clear();
            navigate("/signin", true);
          }}
        >
          Sign out
        </button>
      </header>
      {session.mode === "test" && (
        <p className="test-banner" role="status">
          Test mode: you are viewing sandbox keys, endpoints and deliveries.
        </p>
      )}
      <main id="main" tabIndex={-1}>
        <Suspense fallback={loading}>{page}</Suspense>
      </main>
    </>
  );
}
