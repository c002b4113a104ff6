import { useEffect, useState, useSyncExternalStore } from "react";
import { api } from "./api/client";
import { Link } from "./components/ui";
import { ApiKeysPage } from "./pages/ApiKeys";
import { AuthPage } from "./pages/Auth";
import { BillingPage } from "./pages/Billing";
import { WebhooksPage } from "./pages/Webhooks";
import { navigate, useLocation } from "./router";
import { session } from "./session";

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

  if (!booted) return <p className="boot">Loading…</p>;
  if (publicPage) return <AuthPage key={path} kind={path === "/signup" ? "signup" : "signin"} />;
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
        {page}
      </main>
    </>
  );
}
