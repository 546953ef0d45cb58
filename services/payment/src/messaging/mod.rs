//! Payment's RPC handlers: pay a booking through the provider, post the
//! ledger, emit `payment.captured` or `payment.failed` through the outbox.

use crate::SERVICE;
use crate::domain::capture_legs;
use crate::provider::{PaymentProvider, ProviderError};
use crate::storage;
use sea_orm::{DatabaseConnection, TransactionTrait};
use sha2::{Digest, Sha256};
use shared::envelope::Envelope;
use shared::events::{PaymentCaptured, PaymentFailed};
use shared::ids::PaymentId;
use shared::money::{Split, SplitRates};
use shared::outbox::{OutboxSignal, enqueue};
use shared::rpc::RpcRouter;
use shared::rpcs::{GetWelfareFund, PayBooking, PaymentView, WelfareFundPage};
use shared::{AppError, ErrorCode};
use std::sync::Arc;
use tracing::{info, warn};

/// Provider calls per payment when it times out.
const PROVIDER_ATTEMPTS: usize = 3;

/// What the handlers share.
#[derive(Clone)]
pub struct Payments {
    /// Payment's database.
    pub db: DatabaseConnection,
    /// Wakes the outbox relay.
    pub outbox: OutboxSignal,
    /// The payment provider.
    pub provider: Arc<dyn PaymentProvider>,
    /// Fee and fund rates.
    pub rates: SplitRates,
}

impl Payments {
    /// The RPC methods payment answers.
    pub fn rpc(&self) -> RpcRouter {
        let (a, b) = (self.clone(), self.clone());
        RpcRouter::new(SERVICE)
            .route::<PayBooking, _, _>(move |req| {
                let s = a.clone();
                async move { s.pay(req).await }
            })
            .route::<GetWelfareFund, _, _>(move |req| {
                let s = b.clone();
                async move { s.welfare_fund(req).await }
            })
    }

    /// Pays a booking: once per idempotency key, at most one live payment per
    /// booking, and the provider is called with a key derived from the
    /// payment so a retry after a timeout never charges twice.
    pub async fn pay(&self, req: PayBooking) -> Result<PaymentView, AppError> {
        let key = req.idempotency_key.trim();
        if key.is_empty() || key.len() > 255 {
            return Err(AppError::bad_input(
                "the idempotency key must be 1 to 255 characters",
            ));
        }
        let booking = &req.booking;
        let fingerprint = hex::encode(Sha256::digest(format!(
            "{}|{}",
            booking.id, req.payment_token
        )));
        if let Some(first) = storage::by_key(&self.db, key).await? {
            return replay(first, &fingerprint);
        }
        if booking.status != "AWAITING_PAYMENT" {
            return Err(AppError::conflict(format!(
                "the booking is {}, not awaiting payment",
                booking.status
            )));
        }
        let (Some(amount), Some(listing)) = (booking.total, booking.listing.clone()) else {
            return Err(AppError::conflict("the booking has no price yet"));
        };
        if amount.get() <= 0 {
            return Err(AppError::bad_input("the amount to pay must be positive"));
        }

        let id = PaymentId::new();
        let inserted =
            storage::insert_processing(&self.db, id, booking.id, key, &fingerprint, amount)
                .await
                .map_err(|e| {
                    if shared::db::is_unique_violation(&e) {
                        AppError::conflict(
                            "this booking is already paid or a payment for it is in progress",
                        )
                    } else {
                        AppError::from(e)
                    }
                })?;
        if !inserted {
            // Same key, concurrently: the other request owns it.
            let first = storage::by_key(&self.db, key)
                .await?
                .ok_or_else(|| AppError::internal("payment vanished"))?;
            return replay(first, &fingerprint);
        }

        let mut outcome = Err(ProviderError::Timeout);
        for _ in 0..PROVIDER_ATTEMPTS {
            outcome = self
                .provider
                .charge(&id.to_string(), &req.payment_token, amount)
                .await;
            if outcome != Err(ProviderError::Timeout) {
                break;
            }
            warn!(payment = %id, "provider timed out; retrying with the same key");
        }

        let txn = self.db.begin().await?;
        let view = match outcome {
            Ok(charge) => {
                let split = Split::of(amount, self.rates);
                storage::mark_captured(&txn, id, &charge.reference, &split).await?;
                storage::post(
                    &txn,
                    booking.id,
                    listing.region_code,
                    &capture_legs(&split, listing.host_id),
                )
                .await?;
                let captured = PaymentCaptured {
                    booking_id: booking.id,
                    payment_id: id,
                    split,
                };
                enqueue(&txn, &[Envelope::new(SERVICE, booking.id.0, &captured)]).await?;
                info!(payment = %id, booking = %booking.id, %amount, "payment captured");
                Ok(PaymentView {
                    id,
                    booking_id: booking.id,
                    status: "CAPTURED".into(),
                    amount,
                    split: Some(split),
                    failure_reason: None,
                })
            }
            Err(ProviderError::Declined(reason)) => {
                storage::mark_failed(&txn, id, &reason).await?;
                let failed = PaymentFailed {
                    booking_id: booking.id,
                    payment_id: id,
                    reason: reason.clone(),
                };
                enqueue(&txn, &[Envelope::new(SERVICE, booking.id.0, &failed)]).await?;
                Err(AppError::new(ErrorCode::PaymentDeclined, reason))
            }
            Err(ProviderError::Timeout) => {
                // The charge may have happened: the payment stays PROCESSING
                // for reconciliation, which asks the provider by the same key.
                txn.rollback().await?;
                return Err(AppError::new(
                    ErrorCode::ServiceUnavailable,
                    "the payment provider did not answer; the payment will be reconciled, do not pay again",
                ));
            }
        };
        txn.commit().await?;
        self.outbox.committed();
        view
    }
}

impl Payments {
    /// The public welfare fund: balance, entry count and one page of entries.
    pub async fn welfare_fund(&self, req: GetWelfareFund) -> Result<WelfareFundPage, AppError> {
        if !(1..=100).contains(&req.first) {
            return Err(AppError::bad_input("ask for 1 to 100 entries at a time"));
        }
        let (entries, has_next_page) =
            storage::fund_entries(&self.db, req.first, req.after).await?;
        Ok(WelfareFundPage {
            balance: storage::balance(&self.db, crate::domain::FUND).await?,
            total_count: storage::entry_count(&self.db, crate::domain::FUND).await?,
            entries,
            has_next_page,
        })
    }
}

/// The first result for a key, or IDEMPOTENCY_KEY_REUSED / CONFLICT.
fn replay(first: storage::Stored, fingerprint: &str) -> Result<PaymentView, AppError> {
    if first.fingerprint != fingerprint {
        return Err(AppError::new(
            ErrorCode::IdempotencyKeyReused,
            "this idempotency key was used for a different payment",
        ));
    }
    match first.view.status.as_str() {
        "PROCESSING" => Err(AppError::conflict(
            "a payment with this key is still in progress; retry shortly",
        )),
        "FAILED" => Err(AppError::new(
            ErrorCode::PaymentDeclined,
            first
                .view
                .failure_reason
                .unwrap_or_else(|| "declined".into()),
        )),
        _ => Ok(first.view),
    }
}
