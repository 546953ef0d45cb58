//! The payment-provider adapter and the bundled sandbox, which behaves like
//! a real provider's test mode. Every call carries an idempotency key: a
//! retry with the same key returns the first charge, never a second one.

use async_trait::async_trait;
use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use shared::money::Fen;
use shared::outbox::stmt;
use std::time::Duration;

/// A captured charge at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The provider's reference.
    pub reference: String,
    /// Amount charged.
    pub amount: Fen,
}

/// Money the provider sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRefund {
    /// The provider's reference.
    pub reference: String,
    /// Amount refunded.
    pub amount: Fen,
}

/// How a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Refused; the reason is for the traveler.
    #[error("declined: {0}")]
    Declined(String),
    /// No answer in time: the charge may or may not have happened.
    #[error("the payment provider timed out")]
    Timeout,
}

/// A payment provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Charges `amount` to `token`, once per `idempotency_key`. A call
    /// with a key charged before returns that charge; a call while another
    /// with the same key is still in flight (a retry of a payment whose
    /// first request may be gone) returns the charge or `Timeout`, never
    /// `Declined` — an adapter maps a provider's "request in progress" or
    /// "already paid" answers so (a decline fails the payment the first
    /// call may be capturing).
    async fn charge(
        &self,
        idempotency_key: &str,
        token: &str,
        amount: Fen,
    ) -> Result<Charge, ProviderError>;
    /// Refunds `amount` of the charge made with `charge_key`, once per
    /// `idempotency_key`; never more than was charged in all.
    async fn refund(
        &self,
        idempotency_key: &str,
        charge_key: &str,
        amount: Fen,
    ) -> Result<ProviderRefund, ProviderError>;
    /// Closes the payment of this idempotency key (reconciliation), like
    /// Alipay's `trade.close` or cancelling a Stripe PaymentIntent: returns
    /// the charge if one was made; otherwise none can be made with the key
    /// any more — a call still in flight is then declined — so "no charge"
    /// is final and the payment can be failed safely.
    async fn close(&self, idempotency_key: &str) -> Result<Option<Charge>, ProviderError>;
}

/// The sandbox: test tokens decide the outcome.
///
/// | token | outcome |
/// |---|---|
/// | `tok_success` | captured |
/// | `tok_decline` | declined: card declined |
/// | `tok_insufficient_funds` | declined: insufficient funds |
/// | `tok_timeout_then_success` | charges, but the first call times out |
/// | `tok_slow` | captured after a delay |
/// | `tok_lost_answer` | charges, but every answer is lost (reconciliation finds it) |
///
/// Its records live in payment's database (`sandbox_*` tables), standing in
/// for the provider's own books: they outlive a restart of payment and every
/// replica sees the same ones, as with a real provider.
pub struct Sandbox {
    db: DatabaseConnection,
    slow: Duration,
}

/// What the sandbox knows of a key.
enum Key {
    Charged(Charge),
    Closed,
}

fn closed() -> ProviderError {
    ProviderError::Declined("the payment was closed before it was charged; pay again".into())
}

fn unavailable(e: DbErr) -> ProviderError {
    tracing::warn!(error = %e, "sandbox provider storage failed");
    ProviderError::Timeout
}

impl Sandbox {
    /// A sandbox keeping its books in `db`, whose `tok_slow` takes `slow`.
    pub fn new(db: DatabaseConnection, slow: Duration) -> Sandbox {
        Sandbox { db, slow }
    }

    /// Charges once per key — unless the key was closed first.
    async fn record(&self, key: &str, amount: Fen) -> Result<Charge, ProviderError> {
        // A new key is charged by the insert; a key charged or closed by
        // someone else first is read.
        if let Some(charge) = self.insert(key, amount, false).await.map_err(unavailable)? {
            return Ok(charge);
        }
        match self.existing(key).await.map_err(unavailable)? {
            Some(Key::Charged(charge)) => Ok(charge),
            Some(Key::Closed) => Err(closed()),
            None => Err(unavailable(DbErr::Custom(
                "the sandbox charge vanished".into(),
            ))),
        }
    }

    /// Inserts the key unless it exists; returns the charge when it was
    /// this insert that made it.
    async fn insert(&self, key: &str, amount: Fen, closed: bool) -> Result<Option<Charge>, DbErr> {
        let b = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(stmt(
                b,
                "INSERT INTO sandbox_charges (idempotency_key, reference, amount_fen, created_at, closed)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING
                 RETURNING reference, amount_fen",
                vec![
                    key.into(),
                    format!("sbx_{}", uuid::Uuid::now_v7().simple()).into(),
                    amount.get().into(),
                    Utc::now().into(),
                    closed.into(),
                ],
            ))
            .await?;
        row.map(|r| {
            Ok(Charge {
                reference: r.try_get("", "reference")?,
                amount: Fen(r.try_get("", "amount_fen")?),
            })
        })
        .transpose()
    }

    async fn existing(&self, key: &str) -> Result<Option<Key>, DbErr> {
        let b = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(stmt(
                b,
                "SELECT reference, amount_fen, closed FROM sandbox_charges WHERE idempotency_key = $1",
                vec![key.into()],
            ))
            .await?;
        row.map(|r| {
            Ok(if r.try_get("", "closed")? {
                Key::Closed
            } else {
                Key::Charged(Charge {
                    reference: r.try_get("", "reference")?,
                    amount: Fen(r.try_get("", "amount_fen")?),
                })
            })
        })
        .transpose()
    }
}

#[async_trait]
impl PaymentProvider for Sandbox {
    async fn charge(&self, key: &str, token: &str, amount: Fen) -> Result<Charge, ProviderError> {
        match token {
            // A card that charges needs no look first: the insert finds a
            // key charged or closed before (`record`).
            "tok_success" => return self.record(key, amount).await,
            "tok_slow" => {
                tokio::time::sleep(self.slow).await;
                return self.record(key, amount).await;
            }
            _ => {}
        }
        match self.existing(key).await.map_err(unavailable)? {
            Some(Key::Charged(_)) if token == "tok_lost_answer" => {
                return Err(ProviderError::Timeout);
            }
            Some(Key::Charged(charge)) => return Ok(charge),
            Some(Key::Closed) => return Err(closed()),
            None => {}
        }
        match token {
            "tok_timeout_then_success" | "tok_lost_answer" => {
                // The provider charges, but the answer is lost.
                self.record(key, amount).await?;
                Err(ProviderError::Timeout)
            }
            "tok_decline" => Err(ProviderError::Declined("the card was declined".into())),
            "tok_insufficient_funds" => Err(ProviderError::Declined("insufficient funds".into())),
            other => Err(ProviderError::Declined(format!(
                "unknown payment token `{other}`"
            ))),
        }
    }

    async fn refund(
        &self,
        key: &str,
        charge_key: &str,
        amount: Fen,
    ) -> Result<ProviderRefund, ProviderError> {
        let b = self.db.get_database_backend();
        let txn = self.db.begin().await.map_err(unavailable)?;
        let lock = match b {
            sea_orm::DbBackend::Postgres => " FOR UPDATE",
            _ => "",
        };
        let charge = txn
            .query_one_raw(stmt(
                b,
                &format!("SELECT amount_fen FROM sandbox_charges WHERE idempotency_key = $1{lock}"),
                vec![charge_key.into()],
            ))
            .await
            .map_err(unavailable)?;
        let Some(charge) = charge else {
            return Err(ProviderError::Declined(format!(
                "no charge `{charge_key}` to refund"
            )));
        };
        let charged = Fen(charge.try_get("", "amount_fen").map_err(unavailable)?);
        let first = txn
            .query_one_raw(stmt(
                b,
                "SELECT reference, amount_fen FROM sandbox_refunds WHERE idempotency_key = $1",
                vec![key.into()],
            ))
            .await
            .map_err(unavailable)?;
        if let Some(r) = first {
            return Ok(ProviderRefund {
                reference: r.try_get("", "reference").map_err(unavailable)?,
                amount: Fen(r.try_get("", "amount_fen").map_err(unavailable)?),
            });
        }
        let refunded = txn
            .query_one_raw(stmt(
                b,
                "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS total FROM sandbox_refunds WHERE charge_key = $1",
                vec![charge_key.into()],
            ))
            .await
            .map_err(unavailable)?
            .map(|r| r.try_get::<i64>("", "total"))
            .transpose()
            .map_err(unavailable)?
            .map_or(Fen::ZERO, Fen);
        if amount <= Fen::ZERO || refunded + amount > charged {
            return Err(ProviderError::Declined(format!(
                "cannot refund {amount}: {} of {charged} is left",
                charged - refunded
            )));
        }
        let refund = ProviderRefund {
            reference: format!("sbx_re_{}", uuid::Uuid::now_v7().simple()),
            amount,
        };
        txn.execute_raw(stmt(
            b,
            "INSERT INTO sandbox_refunds (idempotency_key, charge_key, reference, amount_fen, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                key.into(),
                charge_key.into(),
                refund.reference.as_str().into(),
                amount.get().into(),
                Utc::now().into(),
            ],
        ))
        .await
        .map_err(unavailable)?;
        txn.commit().await.map_err(unavailable)?;
        Ok(refund)
    }

    async fn close(&self, key: &str) -> Result<Option<Charge>, ProviderError> {
        if self
            .insert(key, Fen::ZERO, true)
            .await
            .map_err(unavailable)?
            .is_some()
        {
            // Closed by this insert: it was never charged.
            return Ok(None);
        }
        match self.existing(key).await.map_err(unavailable)? {
            Some(Key::Charged(charge)) => Ok(Some(charge)),
            _ => Ok(None),
        }
    }
}
