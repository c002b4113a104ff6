import { lazy, Suspense, useCallback, useEffect, useState } from "react";
import { api, unwrap } from "../api/client";
import type { ApiKey, ApiKeyCreated } from "../api/models";
import { ErrorNotice, useAction, when } from "../components/ui";

// The dialogs are a chunk of their own, fetched when the first one opens.
const dialogs = () => import("./ApiKeyDialogs");
const CreateKeyDialog = lazy(() => dialogs().then((m) => ({ default: m.CreateKeyDialog })));
const CreatedKeyDialog = lazy(() => dialogs().then((m) => ({ default: m.CreatedKeyDialog })));
const KeyDetailsDialog = lazy(() => dialogs().then((m) => ({ default: m.KeyDetailsDialog })));
const RegenerateDialog = lazy(() => dialogs().then((m) => ({ default: m.RegenerateDialog })));
const RevokeDialog = lazy(() => dialogs().then((m) => ({ default: m.RevokeDialog })));

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
      <Suspense fallback={<p aria-live="polite">Loading…</p>}>
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
      </Suspense>
    </>
  );
}

