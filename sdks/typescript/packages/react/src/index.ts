/** React bindings of @penguinmails/sdk: one client per provider, actions with their state. */

import { PenguinMails, type ClientOptions } from '@penguinmails/sdk';
import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useMemo,
  useState,
  type ReactNode,
} from 'react';

export interface PenguinMailsProviderProps extends ClientOptions {
  /** A client you built yourself; otherwise one is built from the other props. */
  client?: PenguinMails;
  children?: ReactNode;
}

const ClientContext = createContext<PenguinMails | null>(null);

/** Makes one PenguinMails client available to `usePenguinMails` below it. */
export function PenguinMailsProvider(props: PenguinMailsProviderProps) {
  const { client, children, apiKey, accessToken, baseUrl, maxRetries, timeout } = props;
  const value = useMemo(
    () => client ?? new PenguinMails({ apiKey, accessToken, baseUrl, maxRetries, timeout, fetch: props.fetch }),
    [client, apiKey, accessToken, baseUrl, maxRetries, timeout, props.fetch],
  );
  return createElement(ClientContext.Provider, { value }, children);
}

type Action<A extends unknown[], R> = (...args: A) => Promise<R>;

/**
 * The provider's client, its resources (`campaigns`, `contacts`, `emails`, ...) and tracked
 * actions (`createCampaign`, `createContact`, `sendEmail`, `sendBulk`) with `loading` and
 * `error` state for the component.
 */
export function usePenguinMails() {
  const client = useContext(ClientContext);
  if (!client) throw new Error('usePenguinMails must be used inside <PenguinMailsProvider>');
  const [pending, setPending] = useState(0);
  const [error, setError] = useState<unknown>(null);

  const track = useCallback(
    <A extends unknown[], R>(fn: Action<A, R>): Action<A, R> =>
      async (...args: A) => {
        setPending((n) => n + 1);
        setError(null);
        try {
          return await fn(...args);
        } catch (err) {
          setError(err);
          throw err;
        } finally {
          setPending((n) => n - 1);
        }
      },
    [],
  );

  return useMemo(
    () => ({
      client,
      campaigns: client.campaigns,
      contacts: client.contacts,
      emails: client.emails,
      templates: client.templates,
      analytics: client.analytics,
      webhooks: client.webhooks,
      apiKeys: client.apiKeys,
      createCampaign: track((body: Parameters<PenguinMails['campaigns']['create']>[0]) => client.campaigns.create(body)),
      createContact: track((body: Parameters<PenguinMails['contacts']['create']>[0]) => client.contacts.create(body)),
      sendEmail: track((body: Parameters<PenguinMails['emails']['send']>[0]) => client.emails.send(body)),
      sendBulk: track((body: Parameters<PenguinMails['emails']['sendBulk']>[0]) => client.emails.sendBulk(body)),
      loading: pending > 0,
      error,
    }),
    [client, track, pending, error],
  );
}
