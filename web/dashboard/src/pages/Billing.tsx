import { useEffect, useRef, useState } from "react";
import { api, unwrap } from "../api/client";
import type { BillingState, Payment, Plan } from "../api/models";
import { ErrorNotice, useAction, when } from "../components/ui";

// After Checkout, Stripe's webhook (not the redirect) changes the plan: the page asks again
// every 2 s, for up to a minute, until the subscription is active.
const CONFIRM_POLL_MS = 2000;
const CONFIRM_POLLS = 30;
const confirmed = (s: BillingState | null) => !!s?.subscription && ["active", "trialing"].includes(s.subscription.status);

const money = (cents: number, currency: string) =>
  new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() }).format(cents / 100);

export function BillingPage({ checkout }: { checkout: string | null }) {
  const [state, setState] = useState<BillingState | null>(null);
  const [plans, setPlans] = useState<Plan[]>([]);
  const [payments, setPayments] = useState<Payment[]>([]);
  const load = useAction();
  const act = useAction();
  useEffect(() => {
    void load.run(async () => {
      const [s, p, pay] = await Promise.all([
        unwrap<BillingState>(api.GET("/api/v1/billing/subscription")),
        unwrap<Plan[]>(api.GET("/api/v1/billing/plans")),
        unwrap<Payment[]>(api.GET("/api/v1/billing/payments")),
      ]);
      setState(s);
      setPlans(p);
      setPayments(pay);
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  const polls = useRef(0);
  useEffect(() => {
    if (checkout !== "success" || !state || confirmed(state) || polls.current >= CONFIRM_POLLS) return;
    const timer = window.setTimeout(() => {
      polls.current += 1;
      void Promise.all([
        unwrap<BillingState>(api.GET("/api/v1/billing/subscription")),
        unwrap<Payment[]>(api.GET("/api/v1/billing/payments")),
      ])
        .then(([s, pay]) => {
          setPayments(pay);
          setState(s);
        })
        // A failed poll shows nothing new; the next one (or a reload) tries again.
        .catch(() => setState((s) => (s ? { ...s } : s)));
    }, CONFIRM_POLL_MS);
    return () => window.clearTimeout(timer);
  }, [checkout, state]);
  const current = plans.find((p) => p.id === state?.plan);
  return (
    <>
      <h1>Billing</h1>
      {checkout === "success" && (
        <p role="status" className="notice ok">
          Thank you: your payment went through.{" "}
          {confirmed(state)
            ? `Your plan is now ${current?.name ?? state?.plan}.`
            : polls.current < CONFIRM_POLLS
              ? "Waiting for Stripe to confirm it…"
              : "The new plan applies as soon as Stripe confirms it; reload this page in a moment."}
        </p>
      )}
      {checkout === "canceled" && (
        <p role="status" className="notice warn">
          Checkout was canceled; your plan has not changed.
        </p>
      )}
      <ErrorNotice error={load.error ?? act.error} />
      {state && (
        <section className="card">
          <h2>Current plan</h2>
          <dl className="facts">
            <dt>Plan</dt>
            <dd>{current?.name ?? state.plan}</dd>
            <dt>Rate limit</dt>
            <dd>{current ? `${current.requests_per_minute} requests per minute` : "—"}</dd>
            <dt>Subscription</dt>
            <dd>{state.subscription ? `${state.subscription.status}, renews ${when(state.subscription.current_period_end)}` : "None"}</dd>
          </dl>
          <button
            type="button"
            disabled={act.busy}
            onClick={() =>
              void act.run(async () => {
                const r = await unwrap<{ url: string }>(api.POST("/api/v1/billing/portal-sessions", { body: {} }));
                location.assign(r.url);
              })
            }
          >
            Manage billing in the customer portal
          </button>
        </section>
      )}
      {plans.length > 0 && (
        <section className="card">
          <h2>Plans</h2>
          <ul className="plans">
            {plans.map((p) => (
              <li key={p.id} className="card">
                <h3>{p.name}</h3>
                <p>
                  {money(p.monthly_amount, p.currency)} / month · {p.requests_per_minute} requests per minute
                </p>
                {p.id === state?.plan ? (
                  <p>
                    <strong>Your plan</strong>
                  </p>
                ) : (
                  p.purchasable && (
                    <button
                      type="button"
                      className="primary"
                      aria-label={`Upgrade to ${p.name}`}
                      disabled={act.busy}
                      onClick={() =>
                        void act.run(async () => {
                          const r = await unwrap<{ url: string }>(
                            api.POST("/api/v1/billing/checkout-sessions", { body: { plan_id: p.id as "starter" | "pro" | "enterprise" } }),
                          );
                          location.assign(r.url);
                        })
                      }
                    >
                      Upgrade
                    </button>
                  )
                )}
              </li>
            ))}
          </ul>
        </section>
      )}
      <section className="card">
        <h2>Payments</h2>
        {payments.length === 0 ? (
          <p>No payments yet.</p>
        ) : (
          <div className="table-wrap" role="region" aria-label="Payments" tabIndex={0}>
            <table>
              <thead>
                <tr>
                  <th scope="col">Date</th>
                  <th scope="col">Amount</th>
                  <th scope="col">Status</th>
                  <th scope="col">Invoice</th>
                </tr>
              </thead>
              <tbody>
                {payments.map((p) => (
                  <tr key={p.id}>
                    <td data-label="Date">{when(p.paid_at ?? p.created_at)}</td>
                    <td data-label="Amount">{money(p.amount_paid || p.amount_due, p.currency)}</td>
                    <td data-label="Status">{p.status}</td>
                    <td data-label="Invoice">
                      {p.hosted_invoice_url ? (
                        <a href={p.hosted_invoice_url} rel="noreferrer noopener">
                          View invoice
                        </a>
                      ) : (
                        "—"
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </>
  );
}
