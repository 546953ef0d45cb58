//! The payment-provider adapter and the bundled sandbox, which behaves like
//! a real provider's test mode. Every call carries an idempotency key: a
//! retry with the same key returns the first charge, never a second one.

use async_trait::async_trait;
use shared::money::Fen;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A captured charge at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The provider's reference.
    pub reference: String,
    /// Amount charged.
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
    /// Charges `amount` to `token`, once per `idempotency_key`.
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
    /// Every charge the provider holds (for reconciliation).
    async fn charges(&self) -> Vec<(String, Charge)>;
}

/// Money the provider sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRefund {
    /// The provider's reference.
    pub reference: String,
    /// Amount refunded.
    pub amount: Fen,
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
#[derive(Default)]
pub struct Sandbox {
    charges: Mutex<HashMap<String, Charge>>,
    /// Refunds by their key: (charge key, refund).
    refunds: Mutex<HashMap<String, (String, ProviderRefund)>>,
    slow: Duration,
}

impl Sandbox {
    /// A sandbox whose `tok_slow` takes `slow`.
    pub fn new(slow: Duration) -> Sandbox {
        Sandbox {
            slow,
            ..Sandbox::default()
        }
    }

    fn record(&self, key: &str, amount: Fen) -> Charge {
        let mut charges = self.charges.lock().unwrap_or_else(|p| p.into_inner());
        charges
            .entry(key.to_owned())
            .or_insert_with(|| Charge {
                reference: format!("sbx_{}", uuid::Uuid::now_v7().simple()),
                amount,
            })
            .clone()
    }

    fn existing(&self, key: &str) -> Option<Charge> {
        self.charges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

#[async_trait]
impl PaymentProvider for Sandbox {
    async fn charge(&self, key: &str, token: &str, amount: Fen) -> Result<Charge, ProviderError> {
        if let Some(charge) = self.existing(key) {
            return Ok(charge);
        }
        match token {
            "tok_success" => Ok(self.record(key, amount)),
            "tok_slow" => {
                tokio::time::sleep(self.slow).await;
                Ok(self.record(key, amount))
            }
            "tok_timeout_then_success" => {
                // The provider charges, but the answer is lost.
                self.record(key, amount);
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
        let Some(charge) = self.existing(charge_key) else {
            return Err(ProviderError::Declined(format!(
                "no charge `{charge_key}` to refund"
            )));
        };
        let mut refunds = self.refunds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, first)) = refunds.get(key) {
            return Ok(first.clone());
        }
        let refunded: Fen = refunds
            .values()
            .filter(|(c, _)| c == charge_key)
            .map(|(_, r)| r.amount)
            .sum();
        if amount <= Fen::ZERO || refunded + amount > charge.amount {
            return Err(ProviderError::Declined(format!(
                "cannot refund {amount}: {} of {} is left",
                charge.amount - refunded,
                charge.amount
            )));
        }
        let refund = ProviderRefund {
            reference: format!("sbx_re_{}", uuid::Uuid::now_v7().simple()),
            amount,
        };
        refunds.insert(key.to_owned(), (charge_key.to_owned(), refund.clone()));
        Ok(refund)
    }

    async fn charges(&self) -> Vec<(String, Charge)> {
        let charges = self.charges.lock().unwrap_or_else(|p| p.into_inner());
        charges
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_retry_after_a_timeout_returns_the_first_charge() {
        let s = Sandbox::default();
        assert_eq!(
            s.charge("k1", "tok_timeout_then_success", Fen(100)).await,
            Err(ProviderError::Timeout)
        );
        let again = s.charge("k1", "tok_timeout_then_success", Fen(100)).await;
        assert!(again.is_ok());
        assert_eq!(s.charges().await.len(), 1);
    }

    #[tokio::test]
    async fn refunds_are_once_per_key_and_never_exceed_the_charge() {
        let s = Sandbox::default();
        s.charge("c", "tok_success", Fen(1000))
            .await
            .expect("charged");
        let first = s.refund("r1", "c", Fen(600)).await.expect("refunded");
        assert_eq!(s.refund("r1", "c", Fen(600)).await, Ok(first));
        assert!(matches!(
            s.refund("r2", "c", Fen(401)).await,
            Err(ProviderError::Declined(_))
        ));
        assert!(s.refund("r3", "c", Fen(400)).await.is_ok());
        assert!(s.refund("r4", "nope", Fen(1)).await.is_err());
    }

    #[tokio::test]
    async fn test_tokens_decline_with_a_reason() {
        let s = Sandbox::default();
        assert!(matches!(
            s.charge("k", "tok_decline", Fen(1)).await,
            Err(ProviderError::Declined(_))
        ));
        assert!(
            matches!(s.charge("k2", "tok_nope", Fen(1)).await, Err(ProviderError::Declined(r)) if r.contains("tok_nope"))
        );
    }
}
