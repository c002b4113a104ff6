import { useState, type FormEvent } from "react";
import { api, unwrap } from "../api/client";
import type { Session } from "../api/models";
import { session } from "../session";
import { ErrorNotice, Link, useAction } from "../components/ui";
import { navigate } from "../router";

export function AuthPage({ kind }: { kind: "signin" | "signup" }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [company, setCompany] = useState("");
  const { busy, error, run } = useAction();

  async function submit(e: FormEvent) {
    e.preventDefault();
    await run(async () => {
      const s =
        kind === "signup"
          ? await unwrap<Session>(api.POST("/api/v1/auth/signup", { body: { email, password, company } }))
          : await unwrap<Session>(api.POST("/api/v1/auth/login", { body: { email, password } }));
      session.start(s.access_token, s.expires_in, s.user.email);
      navigate("/settings/developers/api-keys", true);
    });
  }

  const title = kind === "signup" ? "Create your account" : "Sign in";
  return (
    <main className="auth" id="main">
      <h1>{title}</h1>
      <form onSubmit={submit} className="card">
        <label>
          Email
          <input type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} />
        </label>
        <label>
          Password
          <input
            type="password"
            autoComplete={kind === "signup" ? "new-password" : "current-password"}
            required
            minLength={kind === "signup" ? 12 : 1}
            maxLength={72}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </label>
        {kind === "signup" && (
          <label>
            Company
            <input required maxLength={200} autoComplete="organization" value={company} onChange={(e) => setCompany(e.target.value)} />
          </label>
        )}
        <ErrorNotice error={error} />
        <button type="submit" className="primary" disabled={busy}>
          {kind === "signup" ? "Create account" : "Sign in"}
        </button>
      </form>
      <p>
        {kind === "signup" ? (
          <>
            Have an account? <Link to="/signin">Sign in</Link>
          </>
        ) : (
          <>
            New here? <Link to="/signup">Create an account</Link>
          </>
        )}
      </p>
    </main>
  );
}
