import { useCallback, useEffect, useMemo, useState, type FormEvent } from "react";
import { api, unwrap } from "../api/client";
import type { Delivery, Endpoint, EndpointCreated, EndpointStats, Rotated, TestResult } from "../api/models";
import { EVENT_TYPES } from "../catalog";
import { Chart } from "../components/LazyChart";
import { Code, CopyButton, ErrorNotice, Link, Modal, Tabs, useAction, when } from "../components/ui";
import { navigate } from "../router";

/** The event catalog: GET /api/v1/events/types when the API has it, else the built-in list. */
function useEventTypes(): readonly string[] {
  const [types, setTypes] = useState<readonly string[]>(EVENT_TYPES);
  useEffect(() => {
    void fetch("/api/v1/events/types")
      .then((r) => (r.ok ? r.json() : null))
      .then((body: { data?: ({ type?: string; name?: string } | string)[] } | null) => {
        const list = body?.data?.map((t) => (typeof t === "string" ? t : (t.type ?? t.name ?? ""))).filter(Boolean);
        if (list && list.length) setTypes(list);
      })
      .catch(() => undefined);
  }, []);
  return types;
}

type Dialog =
  | { kind: "edit"; endpoint: Endpoint | null }
  | { kind: "secret"; endpointUrl: string; secret: string; rotated: boolean }
  | { kind: "delete"; endpoint: Endpoint }
  | { kind: "rotate"; endpoint: Endpoint }
  | null;

export function WebhooksPage({ endpointId }: { endpointId?: string }) {
  const [endpoints, setEndpoints] = useState<Endpoint[] | null>(null);
  const [health, setHealth] = useState<Record<string, EndpointStats>>({});
  const [dialog, setDialog] = useState<Dialog>(null);
  const load = useAction();
  const action = useAction();

  const refresh = useCallback(
    () =>
      load.run(async () => {
        const list = await unwrap<Endpoint[]>(api.GET("/api/v1/webhooks", { params: { query: { limit: 100 } } }));
        setEndpoints(list);
        const stats = await Promise.all(
          list.map((e) =>
            unwrap<EndpointStats>(api.GET("/api/v1/webhooks/{endpoint_id}/stats", { params: { path: { endpoint_id: e.id } } })).catch(
              () => null,
            ),
          ),
        );
        setHealth(Object.fromEntries(list.flatMap((e, i) => (stats[i] ? [[e.id, stats[i]]] : []))));
      }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [],
  );
  useEffect(() => {
    void refresh();
  }, [refresh]);

  const selected = endpoints?.find((e) => e.id === endpointId);
  if (endpointId) {
    return (
      <>
        <p>
          <Link to="/settings/webhooks">← All endpoints</Link>
        </p>
        <ErrorNotice error={load.error} />
        {selected ? <EndpointDetail endpoint={selected} /> : endpoints && <p>No endpoint with this id.</p>}
      </>
    );
  }

  async function toggle(e: Endpoint) {
    await action.run(async () => {
      await unwrap(api.PUT("/api/v1/webhooks/{endpoint_id}", { params: { path: { endpoint_id: e.id } }, body: { enabled: !e.enabled } }));
      await refresh();
    });
  }

  return (
    <>
      <div className="page-head">
        <h1>Webhooks</h1>
        <button type="button" className="primary" onClick={() => setDialog({ kind: "edit", endpoint: null })}>
          Add endpoint
        </button>
      </div>
      <ErrorNotice error={load.error ?? action.error} />
      {endpoints === null && !load.error && <p aria-live="polite">Loading…</p>}
      {endpoints && endpoints.length === 0 && (
        <section className="empty card">
          <h2>No webhook endpoints yet</h2>
          <p>Endpoints receive signed HTTP POSTs when emails are delivered, opened, bounced and more.</p>
        </section>
      )}
      {endpoints && endpoints.length > 0 && (
        <div className="table-wrap" role="region" aria-label="Webhook endpoints" tabIndex={0}>
          <table>
            <thead>
              <tr>
                <th scope="col">URL</th>
                <th scope="col">Events</th>
                <th scope="col">Status</th>
                <th scope="col">Health</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {endpoints.map((e) => {
                const h = health[e.id]?.health;
                return (
                  <tr key={e.id}>
                    <td data-label="URL" className="url">
                      <Link to={`/settings/webhooks/${e.id}`}>{e.url}</Link>
                    </td>
                    <td data-label="Events">{e.events.join(", ")}</td>
                    <td data-label="Status">
                      <label className="switch">
                        <input type="checkbox" role="switch" checked={e.enabled} onChange={() => void toggle(e)} aria-label={`Enabled: ${e.url}`} />
                        {e.enabled ? "Enabled" : "Disabled"}
                      </label>
                    </td>
                    <td data-label="Health">{h ? <span className={`badge ${h}`}>{h}</span> : "—"}</td>
                    <td data-label="Actions" className="actions">
                      <button type="button" aria-label={`Edit ${e.url}`} onClick={() => setDialog({ kind: "edit", endpoint: e })}>
                        Edit
                      </button>
                      <button type="button" aria-label={`Test and log ${e.url}`} onClick={() => navigate(`/settings/webhooks/${e.id}`)}>
                        Test and log
                      </button>
                      <button type="button" aria-label={`Rotate secret of ${e.url}`} onClick={() => setDialog({ kind: "rotate", endpoint: e })}>
                        Rotate secret
                      </button>
                      <button type="button" className="danger" aria-label={`Delete ${e.url}`} onClick={() => setDialog({ kind: "delete", endpoint: e })}>
                        Delete
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {/* Below the list, so shown once the list is: appearing earlier, the examples were
          pushed down by the list's arrival (a layout shift of 0.22: Lighthouse 88). */}
      {(endpoints !== null || load.error) && <VerificationExamples />}
      {dialog?.kind === "edit" && (
        <EndpointDialog
          endpoint={dialog.endpoint}
          onClose={() => setDialog(null)}
          onSaved={(created) => {
            setDialog(created ? { kind: "secret", endpointUrl: created.url, secret: created.secret, rotated: false } : null);
            void refresh();
          }}
        />
      )}
      {dialog?.kind === "secret" && <SecretDialog {...dialog} onClose={() => setDialog(null)} />}
      {dialog?.kind === "rotate" && (
        <ConfirmDialog
          title="Rotate the signing secret?"
          text="A new secret signs every delivery from now on; the old one keeps signing alongside it for 24 hours so you can switch."
          confirm="Rotate secret"
          onClose={() => setDialog(null)}
          onConfirm={async () => {
            const r = await unwrap<Rotated>(api.POST("/api/v1/webhooks/{endpoint_id}/rotate-secret", { params: { path: { endpoint_id: dialog.endpoint.id } } }));
            setDialog({ kind: "secret", endpointUrl: dialog.endpoint.url, secret: r.secret, rotated: true });
          }}
        />
      )}
      {dialog?.kind === "delete" && (
        <ConfirmDialog
          title="Delete this endpoint?"
          text={`${dialog.endpoint.url} stops receiving events, and its delivery log is deleted. This cannot be undone.`}
          confirm="Delete endpoint"
          onClose={() => setDialog(null)}
          onConfirm={async () => {
            await unwrap(api.DELETE("/api/v1/webhooks/{endpoint_id}", { params: { path: { endpoint_id: dialog.endpoint.id } } }));
            setDialog(null);
            await refresh();
          }}
        />
      )}
    </>
  );
}

function ConfirmDialog(props: { title: string; text: string; confirm: string; onClose: () => void; onConfirm: () => Promise<void> }) {
  const { busy, error, run } = useAction();
  return (
    <Modal title={props.title} onClose={props.onClose}>
      <p>{props.text}</p>
      <ErrorNotice error={error} />
      <div className="buttons">
        <button type="button" onClick={props.onClose}>
          Cancel
        </button>
        <button type="button" className="danger" disabled={busy} onClick={() => void run(props.onConfirm)}>
          {props.confirm}
        </button>
      </div>
    </Modal>
  );
}

function EndpointDialog({ endpoint, onClose, onSaved }: { endpoint: Endpoint | null; onClose: () => void; onSaved: (created: EndpointCreated | null) => void }) {
  const types = useEventTypes();
  const [url, setUrl] = useState(endpoint?.url ?? "");
  const [description, setDescription] = useState(endpoint?.description ?? "");
  const [events, setEvents] = useState<string[]>(endpoint?.events ?? []);
  const [campaigns, setCampaigns] = useState((endpoint?.filters.campaign_ids ?? []).join(", "));
  const [tags, setTags] = useState((endpoint?.filters.contact_tags ?? []).join(", "));
  const { busy, error, setError, run } = useAction();
  const list = (s: string) => s.split(",").map((x) => x.trim()).filter(Boolean);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (events.length === 0) {
      setError(new Error("Choose at least one event type."));
      return;
    }
    const body = { url, description: description || null, events: [...types.filter((t) => events.includes(t)), ...events.filter((e) => !types.includes(e))], filters: { campaign_ids: list(campaigns), contact_tags: list(tags) } };
    await run(async () => {
      if (endpoint) {
        await unwrap(api.PUT("/api/v1/webhooks/{endpoint_id}", { params: { path: { endpoint_id: endpoint.id } }, body }));
        onSaved(null);
      } else {
        onSaved(await unwrap<EndpointCreated>(api.POST("/api/v1/webhooks", { body: { ...body, enabled: true } })));
      }
    });
  }

  const groups = useMemo(() => {
    const g: Record<string, string[]> = {};
    for (const t of types) (g[t.split(".")[0]] ??= []).push(t);
    return Object.entries(g);
  }, [types]);

  return (
    <Modal title={endpoint ? "Edit endpoint" : "Add endpoint"} onClose={onClose} wide>
      <form onSubmit={submit}>
        <label>
          Endpoint URL
          <input type="url" required placeholder="https://example.com/webhooks" value={url} onChange={(e) => setUrl(e.target.value)} />
        </label>
        <label>
          Description (optional)
          <input maxLength={500} value={description} onChange={(e) => setDescription(e.target.value)} />
        </label>
        <fieldset>
          <legend>Events</legend>
          <label className="inline">
            <input
              type="checkbox"
              checked={events.length === types.length}
              onChange={(e) => setEvents(e.target.checked ? [...types] : [])}
            />
            All events
          </label>
          {groups.map(([group, names]) => (
            <div key={group} className="checks" role="group" aria-label={`${group} events`}>
              {names.map((t) => (
                <label key={t} className="inline">
                  <input type="checkbox" checked={events.includes(t)} onChange={(e) => setEvents(e.target.checked ? [...events, t] : events.filter((x) => x !== t))} />
                  {t}
                </label>
              ))}
            </div>
          ))}
        </fieldset>
        <fieldset>
          <legend>Filters (optional)</legend>
          <label>
            Only these campaign ids (comma-separated)
            <input value={campaigns} onChange={(e) => setCampaigns(e.target.value)} />
          </label>
          <label>
            Only contacts with these tags (comma-separated)
            <input value={tags} onChange={(e) => setTags(e.target.value)} />
          </label>
        </fieldset>
        <ErrorNotice error={error} />
        <div className="buttons">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy}>
            {endpoint ? "Save changes" : "Add endpoint"}
          </button>
        </div>
      </form>
    </Modal>
  );
}

function SecretDialog({ endpointUrl, secret, rotated, onClose }: { endpointUrl: string; secret: string; rotated: boolean; onClose: () => void }) {
  return (
    <Modal title={rotated ? "New signing secret" : "Endpoint added"} onClose={onClose} wide>
      <p>
        Signing secret for <span className="url">{endpointUrl}</span>. It is shown <strong>only once</strong>: store it where your
        receiver reads its configuration.
      </p>
      <div className="secret">
        <code aria-label="Signing secret">{secret}</code>
        <CopyButton text={secret} label="Copy secret" />
      </div>
      <div className="buttons">
        <button type="button" className="primary" onClick={onClose}>
          Done
        </button>
      </div>
    </Modal>
  );
}

function VerificationExamples() {
  return (
    <section className="card">
      <h2>Verify signatures</h2>
      <p>
        Each delivery carries <code>webhook-id</code>, <code>webhook-timestamp</code> and <code>webhook-signature</code> headers
        (Standard Webhooks). Verify them with your endpoint&apos;s secret before trusting the body.
      </p>
      <Tabs
        tabs={[
          {
            name: "Node.js",
            content: (
              <Code>{`import { Webhook } from "standardwebhooks";\n\nconst wh = new Webhook(process.env.PENGUINMAILS_WEBHOOK_SECRET);\n// rawBody: the request body exactly as received (a string or Buffer)\nconst event = wh.verify(rawBody, {\n  "webhook-id": req.headers["webhook-id"],\n  "webhook-timestamp": req.headers["webhook-timestamp"],\n  "webhook-signature": req.headers["webhook-signature"],\n});`}</Code>
            ),
          },
          {
            name: "Python",
            content: (
              <Code>{`from standardwebhooks import Webhook\n\nwh = Webhook(os.environ["PENGUINMAILS_WEBHOOK_SECRET"])\n# raises WebhookVerificationError when the signature or timestamp is wrong\nevent = wh.verify(request.body, dict(request.headers))`}</Code>
            ),
          },
          {
            name: "PHP",
            content: (
              <Code>{`<?php\n$secret = base64_decode(substr(getenv('PENGUINMAILS_WEBHOOK_SECRET'), 6));\n$id = $_SERVER['HTTP_WEBHOOK_ID'];\n$ts = $_SERVER['HTTP_WEBHOOK_TIMESTAMP'];\n$body = file_get_contents('php://input');\nif (abs(time() - (int)$ts) > 300) { http_response_code(400); exit; }\n$expected = base64_encode(hash_hmac('sha256', "$id.$ts.$body", $secret, true));\n$ok = false;\nforeach (explode(' ', $_SERVER['HTTP_WEBHOOK_SIGNATURE']) as $sig) {\n    [$version, $value] = explode(',', $sig, 2) + [null, null];\n    if ($version === 'v1' && hash_equals($expected, $value)) { $ok = true; }\n}\nif (!$ok) { http_response_code(400); exit; }`}</Code>
            ),
          },
        ]}
      />
    </section>
  );
}

const STATUSES = ["pending", "sending", "retrying", "succeeded", "failed", "paused"];

function EndpointDetail({ endpoint }: { endpoint: Endpoint }) {
  const types = useEventTypes();
  const [stats, setStats] = useState<EndpointStats | null>(null);
  const [deliveries, setDeliveries] = useState<Delivery[] | null>(null);
  const [filter, setFilter] = useState({ event_type: "", status: "", from: "", to: "" });
  const [testType, setTestType] = useState(endpoint.events[0] ?? "email.opened");
  const [testResult, setTestResult] = useState<TestResult | null>(null);
  const [since, setSince] = useState("");
  const [notice, setNotice] = useState("");
  const load = useAction();
  const act = useAction();

  const refresh = useCallback(
    () =>
      load.run(async () => {
        const path = { endpoint_id: endpoint.id };
        const query = {
          limit: 25,
          ...(filter.event_type && { event_type: filter.event_type }),
          ...(filter.status && { status: filter.status }),
          ...(filter.from && { created_after: new Date(filter.from).toISOString() }),
          ...(filter.to && { created_before: new Date(filter.to).toISOString() }),
        };
        const [s, list] = await Promise.all([
          unwrap<EndpointStats>(api.GET("/api/v1/webhooks/{endpoint_id}/stats", { params: { path } })),
          unwrap<Delivery[]>(api.GET("/api/v1/webhooks/{endpoint_id}/deliveries", { params: { path, query: query as never } })),
        ]);
        // The list has no response time: each row's attempts come from its detail.
        const detailed = await Promise.all(
          list.map((d) =>
            unwrap<Delivery>(api.GET("/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}", { params: { path: { ...path, delivery_id: d.id } } })).catch(() => d),
          ),
        );
        setStats(s);
        setDeliveries(detailed);
      }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [endpoint.id, filter],
  );
  useEffect(() => {
    void refresh();
  }, [refresh]);

  const preview = useMemo(
    () =>
      JSON.stringify(
        { type: testType, timestamp: new Date().toISOString(), data: { "…": `sample ${testType} data, filled in by the server` } },
        null,
        2,
      ),
    [testType],
  );

  const chart = useMemo(() => {
    const attempts = (deliveries ?? []).flatMap((d) => d.attempt_log ?? []);
    const hours = new Map<number, { ok: number; total: number; ms: number; n: number }>();
    for (const a of attempts) {
      const h = Math.floor(new Date(a.attempted_at).getTime() / 3600e3) * 3600;
      const b = hours.get(h) ?? { ok: 0, total: 0, ms: 0, n: 0 };
      b.total += 1;
      if (a.status_code !== null && a.status_code >= 200 && a.status_code < 300) b.ok += 1;
      if (a.response_ms !== null) {
        b.ms += a.response_ms;
        b.n += 1;
      }
      hours.set(h, b);
    }
    const times = [...hours.keys()].sort((a, b) => a - b);
    const rows = times.map((t) => hours.get(t)!);
    return {
      times,
      rates: [
        { label: "Success rate %", values: rows.map((r) => Math.round((100 * r.ok) / r.total)), color: "#15803d" },
        { label: "Error rate %", values: rows.map((r) => Math.round((100 * (r.total - r.ok)) / r.total)), color: "#b91c1c" },
      ],
      latency: [{ label: "Avg response ms", values: rows.map((r) => (r.n ? Math.round(r.ms / r.n) : null)), color: "#2563eb" }],
    };
  }, [deliveries]);

  const pct = (v: number | null | undefined) => (v === null || v === undefined ? "—" : `${Math.round(v * 1000) / 10}%`);
  return (
    <>
      <h1 className="url">{endpoint.url}</h1>
      <ErrorNotice error={load.error ?? act.error} />
      {notice && (
        <p role="status" className="notice">
          {notice}
        </p>
      )}
      {stats && (
        <section className="card">
          <h2>Last 24 hours</h2>
          <dl className="facts stats">
            <dt>Health</dt>
            <dd>
              <span className={`badge ${stats.health}`}>{stats.health}</span>
            </dd>
            <dt>Success rate</dt>
            <dd>{pct(stats["24h"].success_rate)}</dd>
            <dt>Error rate</dt>
            <dd>{pct(stats["24h"].error_rate)}</dd>
            <dt>Average response time</dt>
            <dd>{stats["24h"].avg_response_ms === null ? "—" : `${stats["24h"].avg_response_ms} ms`}</dd>
            <dt>Attempts (7 days)</dt>
            <dd>{stats["7d"].attempts}</dd>
          </dl>
          {chart.times.length > 0 && (
            <div className="charts">
              <Chart title="Success and error rate per hour" times={chart.times} series={chart.rates} />
              <Chart title="Average response time per hour" times={chart.times} series={chart.latency} />
            </div>
          )}
        </section>
      )}
      <section className="card">
        <h2>Send a test event</h2>
        <label>
          Event type
          <select value={testType} onChange={(e) => setTestType(e.target.value)}>
            {types.map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
        </label>
        <p>Payload preview</p>
        <pre className="payload" aria-label="Sample payload preview">
          <code>{preview}</code>
        </pre>
        <button
          type="button"
          className="primary"
          disabled={act.busy}
          onClick={() =>
            void act.run(async () => {
              setTestResult(
                await unwrap<TestResult>(
                  api.POST("/api/v1/webhooks/{endpoint_id}/test", { params: { path: { endpoint_id: endpoint.id } }, body: { event_type: testType } }),
                ),
              );
              await refresh();
            })
          }
        >
          Send test
        </button>
        {testResult && (
          <div role="status" className="notice">
            <p>
              Test {testResult.attempt.succeeded ? "delivered" : "failed"}: HTTP {testResult.attempt.status_code ?? "no answer"}
              {testResult.attempt.response_ms !== null && ` in ${Math.round(testResult.attempt.response_ms)} ms`}
              {testResult.attempt.error && ` (${testResult.attempt.error})`}
            </p>
            <details>
              <summary>Payload sent</summary>
              <pre className="payload">
                <code>{JSON.stringify(testResult.payload, null, 2)}</code>
              </pre>
            </details>
          </div>
        )}
      </section>
      <section className="card">
        <h2>Delivery log</h2>
        <form
          className="filters"
          aria-label="Filter deliveries"
          onSubmit={(e) => {
            e.preventDefault();
            const f = new FormData(e.currentTarget);
            setFilter({
              event_type: String(f.get("event_type") ?? ""),
              status: String(f.get("status") ?? ""),
              from: String(f.get("from") ?? ""),
              to: String(f.get("to") ?? ""),
            });
          }}
        >
          <label>
            Event type
            <select name="event_type" defaultValue={filter.event_type}>
              <option value="">Any</option>
              {types.map((t) => (
                <option key={t}>{t}</option>
              ))}
            </select>
          </label>
          <label>
            Status
            <select name="status" defaultValue={filter.status}>
              <option value="">Any</option>
              {STATUSES.map((s) => (
                <option key={s}>{s}</option>
              ))}
            </select>
          </label>
          <label>
            From
            <input type="datetime-local" name="from" defaultValue={filter.from} />
          </label>
          <label>
            To
            <input type="datetime-local" name="to" defaultValue={filter.to} />
          </label>
          <button type="submit">Apply filters</button>
        </form>
        {deliveries && deliveries.length === 0 && <p>No deliveries match.</p>}
        {deliveries && deliveries.length > 0 && (
          <div className="table-wrap" role="region" aria-label="Deliveries" tabIndex={0}>
            <table>
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  <th scope="col">Event type</th>
                  <th scope="col">Status</th>
                  <th scope="col">Status code</th>
                  <th scope="col">Response time</th>
                  <th scope="col">Retries</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {deliveries.map((d) => {
                  const last = d.attempt_log?.[d.attempt_log.length - 1];
                  return (
                    <tr key={d.id}>
                      <td data-label="Time">{when(d.created_at)}</td>
                      <td data-label="Event type">
                        {d.event_type}
                        {d.test && " (test)"}
                      </td>
                      <td data-label="Status">
                        <span className={`badge ${d.status}`}>{d.status}</span>
                      </td>
                      <td data-label="Status code">{d.last_status_code ?? "—"}</td>
                      <td data-label="Response time">{last?.response_ms != null ? `${Math.round(last.response_ms)} ms` : "—"}</td>
                      <td data-label="Retries">{Math.max(d.attempts - 1, 0)}</td>
                      <td data-label="Actions">
                        {(d.status === "failed" || d.status === "succeeded") && (
                          <button
                            type="button"
                            aria-label={`Retry delivery ${d.id}`}
                            onClick={() =>
                              void act.run(async () => {
                                await unwrap(
                                  api.POST("/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry", {
                                    params: { path: { endpoint_id: endpoint.id, delivery_id: d.id } },
                                  }),
                                );
                                setNotice("Delivery queued again.");
                                await refresh();
                              })
                            }
                          >
                            Retry
                          </button>
                        )}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
        <form
          className="filters"
          onSubmit={(e) => {
            e.preventDefault();
            void act.run(async () => {
              const r = await unwrap<{ recovered: number }>(
                api.POST("/api/v1/webhooks/{endpoint_id}/recover", {
                  params: { path: { endpoint_id: endpoint.id } },
                  body: { since: new Date(since).toISOString() },
                }),
              );
              setNotice(`${r.recovered} failed deliveries queued again.`);
              await refresh();
            });
          }}
        >
          <label>
            Recover failed deliveries since
            <input type="datetime-local" required value={since} onChange={(e) => setSince(e.target.value)} />
          </label>
          <button type="submit">Recover failed</button>
        </form>
      </section>
    </>
  );
}
