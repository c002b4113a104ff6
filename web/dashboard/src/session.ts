// The signed-in session. The access token lives in this module only (memory); the refresh
// token is an HttpOnly cookie the browser sends to /api/v1/auth/* alone. Nothing is written
// to localStorage or sessionStorage.
type Listener = () => void;

class SessionStore {
  accessToken: string | null = null;
  email: string | null = null;
  mode: "live" | "test" = "live";
  private timer: number | undefined;
  private listeners = new Set<Listener>();
  private refreshing: Promise<boolean> | null = null;

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(): void {
    for (const fn of this.listeners) fn();
  }

  start(token: string, expiresIn: number, email?: string | null): void {
    this.accessToken = token;
    if (email) this.email = email;
    window.clearTimeout(this.timer);
    // Renew a minute before expiry, so pages never see a 401 from an old token.
    this.timer = window.setTimeout(() => void this.refresh(), Math.max(expiresIn - 60, 5) * 1000);
    this.emit();
  }

  setMode(mode: "live" | "test"): void {
    this.mode = mode;
    this.emit();
  }

  clear(): void {
    this.accessToken = null;
    this.email = null;
    window.clearTimeout(this.timer);
    this.emit();
  }

  /** New access token from the refresh cookie; false (and signed out) when it fails. */
  refresh(): Promise<boolean> {
    this.refreshing ??= (async () => {
      try {
        const r = await fetch("/api/v1/auth/refresh", {
          method: "POST",
          headers: { "X-Refresh-Token-Transport": "cookie" },
          credentials: "same-origin",
        });
        if (!r.ok) {
          this.clear();
          return false;
        }
        const body = (await r.json()) as { data: { access_token: string; expires_in: number } };
        this.start(body.data.access_token, body.data.expires_in);
        return true;
      } catch {
        return false;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }
}

export const session = new SessionStore();
