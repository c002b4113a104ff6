import { useCallback, useEffect, useMemo, useState, type FormEvent } from "react";
import { api, unwrap } from "../api/client";
import type { ApiKey, ApiKeyCreated, Usage } from "../api/models";
import { SCOPES } from "../catalog";
import { Chart } from "../components/LazyChart";
import { Code, CopyButton, ErrorNotice, Modal, Tabs, useAction, when } from "../components/ui";

type Dialog =
  | { kind: "create" }
  | { kind: "created"; key: ApiKeyCreated }
  | { kind: "details"; key: ApiKey }
  | { kind: "regenerate"; key: ApiKey }
  | { kind: "revoke"; key: ApiKey }
  | null;

export function ApiKeysPage() {
  const [keys, setKeys] = useState<ApiKey[] | null>(null);
  const [dialog, setDialog] = useState<Dialog>(null);
  const load = useAction();

  const refresh = useCallback(
    () =>
      load.run(async () => {
        setKeys(await unwrap<ApiKey[]>(api.GET("/api/v1/platform/api-keys", { params: { query: { limit: 100 } } })));
      }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [],
  );
  useEffect(() => {
    void refresh();
  }, [refresh]);

  return (
    <>
      <div className="page-head">
        <h1>API keys</h1>
        {keys && keys.length > 0 && (
          <button type="button" className="primary" onClick={() => setDialog({ kind: "create" })}>
            Create API key
          </button>
        )}
      </div>
      <ErrorNotice error={load.error} />
      {keys === null && !load.error && <p aria-live="polite">Loading…</p>}
      {keys && keys.length === 0 && (
        <section className="empty card">
          <h2>No API keys yet</h2>
          <p>API keys let your code send email and read analytics through the PenguinMails API.</p>
          <button type="button" className="primary" onClick={() => setDialog({ kind: "create" })}>
            Create your first API key
          </button>
        </section>
      )}
      {keys && keys.length > 0 && (
        <div className="table-wrap" role="region" aria-label="API keys" tabIndex={0}>
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Key</th>
                <th scope="col">Mode</th>
                <th scope="col">Scopes</th>
                <th scope="col">Last used</th>
                <th scope="col">Created</th>
                <th scope="col">Status</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {keys.map((k) => (
                <tr key={k.id}>
                  <td data-label="Name">{k.name}</td>
                  <td data-label="Key">
                    <code>{k.masked_key}</code>
                  </td>
                  <td data-label="Mode">
                    <span className={`badge ${k.mode}`}>{k.mode}</span>
                  </td>
                  <td data-label="Scopes">{k.scopes.join(", ")}</td>
                  <td data-label="Last used">{when(k.usage?.last_used_at as string | null | undefined)}</td>
                  <td data-label="Created">{when(k.created_at)}</td>
                  <td data-label="Status">
                    <span className={`badge ${k.status}`}>{k.status}</span>
                  </td>
                  <td data-label="Actions" className="actions">
                    <button type="button" aria-label={`Details of ${k.name}`} onClick={() => setDialog({ kind: "details", key: k })}>
                      Details
                    </button>
                    {k.status === "active" && (
                      <>
                        <button type="button" aria-label={`Regenerate ${k.name}`} onClick={() => setDialog({ kind: "regenerate", key: k })}>
                          Regenerate
                        </button>
                        <button type="button" className="danger" aria-label={`Revoke ${k.name}`} onClick={() => setDialog({ kind: "revoke", key: k })}>
                          Revoke
                        </button>
                      </>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {dialog?.kind === "create" && (
        <CreateKeyDialog
          onClose={() => setDialog(null)}
          onCreated={(key) => {
            setDialog({ kind: "created", key });
            void refresh();
          }}
        />
      )}
      {dialog?.kind === "created" && <CreatedKeyDialog created={dialog.key} onClose={() => setDialog(null)} />}
      {dialog?.kind === "details" && <KeyDetailsDialog apiKey={dialog.key} onClose={() => setDialog(null)} />}
      {dialog?.kind === "regenerate" && (
        <RegenerateDialog
          apiKey={dialog.key}
          onClose={() => setDialog(null)}
          onDone={(key) => {
            setDialog({ kind: "created", key });
            void refresh();
          }}
        />
      )}
      {dialog?.kind === "revoke" && (
        <RevokeDialog
          apiKey={dialog.key}
          onClose={() => setDialog(null)}
          onDone={() => {
            setDialog(null);
            void refresh();
          }}
        />
      )}
    </>
  );
}

function CreateKeyDialog({ onClose, onCreated }: { onClose: () => void; onCreated: (k: ApiKeyCreated) => void }) {
  const [name, setName] = useState("");
  const [mode, setMode] = useState<"live" | "test">("test");
  const [scopes, setScopes] = useState<string[]>([]);
  const [expires, setExpires] = useState("");
  const { busy, error, setError, run } = useAction();

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (scopes.length === 0) {
      setError(new Error("Choose at least one scope."));
      return;
    }
    const created = await run(() =>
      unwrap<ApiKeyCreated>(
        api.POST("/api/v1/platform/api-keys", {
          body: {
            name,
            mode,
            scopes: SCOPES.filter((s) => scopes.includes(s)),
            expires_at: expires ? new Date(`${expires}T23:59:59`).toISOString() : null,
          },
        }),
      ),
    );
    if (created) onCreated(created);
  }

  return (
    <Modal title="Create API key" onClose={onClose}>
      <form onSubmit={submit}>
        <label>
          Name
          <input required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />
        </label>
        <fieldset>
          <legend>Mode</legend>
          {(["live", "test"] as const).map((m) => (
            <label key={m} className="inline">
              <input type="radio" name="mode" value={m} checked={mode === m} onChange={() => setMode(m)} />
              {m === "live" ? "Live" : "Test (sandbox: nothing is sent)"}
            </label>
          ))}
        </fieldset>
        <fieldset>
          <legend>Scopes</legend>
          <div className="checks">
            {SCOPES.map((s) => (
              <label key={s} className="inline">
                <input
                  type="checkbox"
                  checked={scopes.includes(s)}
                  onChange={(e) => setScopes(e.target.checked ? [...scopes, s] : scopes.filter((x) => x !== s))}
                />
                {s}
              </label>
            ))}
          </div>
        </fieldset>
        <label>
          Expires on (optional)
          <input type="date" value={expires} min={new Date().toISOString().slice(0, 10)} onChange={(e) => setExpires(e.target.value)} />
        </label>
        <ErrorNotice error={error} />
        <div className="buttons">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy}>
            Create key
          </button>
        </div>
      </form>
    </Modal>
  );
}

export function keyExamples(key: string, origin: string) {
  return [
    {
      name: "cURL",
      content: <Code>{`curl ${origin}/api/v1/emails \\\n  -H "Authorization: Bearer ${key}"`}</Code>,
    },
    {
      name: "Node.js",
      content: (
        <Code>{`const res = await fetch("${origin}/api/v1/emails", {\n  headers: { Authorization: "Bearer ${key}" },\n});\nconsole.log(await res.json());`}</Code>
      ),
    },
    {
      name: "Python",
      content: (
        <Code>{`import httpx\n\nres = httpx.get(\n    "${origin}/api/v1/emails",\n    headers={"Authorization": "Bearer ${key}"},\n)\nprint(res.json())`}</Code>
      ),
    },
  ];
}

function CreatedKeyDialog({ created, onClose }: { created: ApiKeyCreated; onClose: () => void }) {
  const [confirming, setConfirming] = useState(false);
  const envHref = useMemo(
    () => URL.createObjectURL(new Blob([`PENGUINMAILS_API_KEY=${created.key}\n`], { type: "application/octet-stream" })),
    [created.key],
  );
  useEffect(() => () => URL.revokeObjectURL(envHref), [envHref]);
  return (
    <Modal title="Your new API key" onClose={() => setConfirming(true)} wide>
      <p className="notice warn">
        Copy this key now: it is shown <strong>only once</strong>. PenguinMails stores only a hash of it.
      </p>
      <div className="secret">
        <code aria-label="New API key">{created.key}</code>
        <CopyButton text={created.key} label="Copy key" />
        <a className="button" href={envHref} download="penguinmails.env">
          Download .env
        </a>
      </div>
      <h3>Try it</h3>
      <Tabs tabs={keyExamples(created.key, location.origin)} />
      {confirming ? (
        <div className="notice warn" role="alertdialog" aria-label="Close without the key?">
          <p>Have you stored the key? You will not be able to see it again.</p>
          <div className="buttons">
            <button type="button" onClick={() => setConfirming(false)}>
              Go back
            </button>
            <button type="button" className="primary" onClick={onClose}>
              Yes, I stored it
            </button>
          </div>
        </div>
      ) : (
        <div className="buttons">
          <button type="button" className="primary" onClick={() => setConfirming(true)}>
            Done
          </button>
        </div>
      )}
    </Modal>
  );
}

const RANGES = [
  { label: "Last hour", ms: 3600e3, granularity: "minute" },
  { label: "Last 24 hours", ms: 86400e3, granularity: "hour" },
  { label: "Last 7 days", ms: 7 * 86400e3, granularity: "hour" },
  { label: "Last 30 days", ms: 30 * 86400e3, granularity: "day" },
] as const;

function KeyDetailsDialog({ apiKey, onClose }: { apiKey: ApiKey; onClose: () => void }) {
  const [range, setRange] = useState(0);
  const [usage, setUsage] = useState<Usage | null>(null);
  const { error, run } = useAction();
  useEffect(() => {
    const r = RANGES[range];
    const to = new Date(Date.now() + 60e3);
    void run(async () =>
      setUsage(
        await unwrap<Usage>(
          api.GET("/api/v1/platform/api-keys/{key_id}/usage", {
            params: {
              path: { key_id: apiKey.id },
              query: { from: new Date(to.getTime() - r.ms).toISOString(), to: to.toISOString(), granularity: r.granularity } as never,
            },
          }),
        ),
      ),
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [range, apiKey.id]);
  const chart = useMemo(() => {
    const buckets = usage?.buckets ?? [];
    return {
      times: buckets.map((b) => new Date(b.minute).getTime() / 1000),
      series: [
        { label: "Requests", values: buckets.map((b) => b.requests), color: "#2563eb" },
        { label: "Errors", values: buckets.map((b) => b.errors), color: "#b91c1c" },
      ],
      // Seed 002 §2: "usage charts (requests over time, error rate)".
      rate: [
        {
          label: "Error rate %",
          values: buckets.map((b) => (b.requests ? Math.round((1000 * b.errors) / b.requests) / 10 : null)),
          color: "#b91c1c",
        },
      ],
    };
  }, [usage]);
  return (
    <Modal title={`Key: ${apiKey.name}`} onClose={onClose} wide>
      <dl className="facts">
        <dt>Key</dt>
        <dd>
          <code>{apiKey.masked_key}</code>
        </dd>
        <dt>Mode</dt>
        <dd>{apiKey.mode}</dd>
        <dt>Scopes</dt>
        <dd>{apiKey.scopes.join(", ")}</dd>
        <dt>Status</dt>
        <dd>{apiKey.status}</dd>
        <dt>Expires</dt>
        <dd>{apiKey.expires_at ? when(apiKey.expires_at) : "Never"}</dd>
        <dt>Total requests</dt>
        <dd data-testid="total-requests">{usage ? usage.totals.request_count : "…"}</dd>
        <dt>Total errors</dt>
        <dd>{usage ? usage.totals.error_count : "…"}</dd>
        <dt>Error rate</dt>
        <dd data-testid="error-rate">
          {usage ? (usage.totals.request_count ? `${Math.round((1000 * usage.totals.error_count) / usage.totals.request_count) / 10}%` : "—") : "…"}
        </dd>
      </dl>
      <label>
        Range
        <select value={range} onChange={(e) => setRange(Number(e.target.value))}>
          {RANGES.map((r, i) => (
            <option key={r.label} value={i}>
              {r.label}
            </option>
          ))}
        </select>
      </label>
      <ErrorNotice error={error} />
      {usage && <Chart title="Requests and errors" times={chart.times} series={chart.series} />}
      {usage && <Chart title="Error rate" times={chart.times} series={chart.rate} />}
    </Modal>
  );
}

const GRACE = [
  { label: "Stop the old key now", seconds: 0 },
  { label: "Keep the old key for 1 hour", seconds: 3600 },
  { label: "Keep the old key for 24 hours", seconds: 86400 },
  { label: "Keep the old key for 7 days", seconds: 7 * 86400 },
];

function RegenerateDialog({ apiKey, onClose, onDone }: { apiKey: ApiKey; onClose: () => void; onDone: (k: ApiKeyCreated) => void }) {
  const [grace, setGrace] = useState(0);
  const { busy, error, run } = useAction();
  return (
    <Modal title={`Regenerate ${apiKey.name}?`} onClose={onClose}>
      <p className="notice warn" role="note">
        Security warning: a new secret replaces <code>{apiKey.masked_key}</code>. Every application using the old key
        stops working when the grace period ends. Regenerate only if you can update them, or if the key leaked.
      </p>
      <label>
        Grace period for the old key
        <select value={grace} onChange={(e) => setGrace(Number(e.target.value))}>
          {GRACE.map((g) => (
            <option key={g.seconds} value={g.seconds}>
              {g.label}
            </option>
          ))}
        </select>
      </label>
      <ErrorNotice error={error} />
      <div className="buttons">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button
          type="button"
          className="danger"
          disabled={busy}
          onClick={async () => {
            const key = await run(() =>
              unwrap<ApiKeyCreated>(
                api.POST("/api/v1/platform/api-keys/{key_id}/regenerate", {
                  params: { path: { key_id: apiKey.id } },
                  body: { grace_period_seconds: grace },
                }),
              ),
            );
            if (key) onDone(key);
          }}
        >
          Regenerate key
        </button>
      </div>
    </Modal>
  );
}

function RevokeDialog({ apiKey, onClose, onDone }: { apiKey: ApiKey; onClose: () => void; onDone: () => void }) {
  const { busy, error, run } = useAction();
  return (
    <Modal title={`Revoke ${apiKey.name}?`} onClose={onClose}>
      <p>
        Requests with <code>{apiKey.masked_key}</code> will be refused at once. This cannot be undone.
      </p>
      <ErrorNotice error={error} />
      <div className="buttons">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button
          type="button"
          className="danger"
          disabled={busy}
          onClick={async () => {
            const ok = await run(() => unwrap(api.DELETE("/api/v1/platform/api-keys/{key_id}", { params: { path: { key_id: apiKey.id } } })));
            if (ok !== undefined) onDone();
          }}
        >
          Revoke key
        </button>
      </div>
    </Modal>
  );
}
