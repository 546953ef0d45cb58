//! Client idempotency keys for the creates that have no key of their own
//! (a homestay, room type, host, route, departure): sent again with the
//! same key, a create answers what it answered the first time — Stripe's
//! semantics, as `createBooking` — instead of making a second. The key
//! comes scoped to its caller by the gateway; a service keeps it with the
//! request's fingerprint and its answer in `create_keys`, in the create's
//! own transaction.

use crate::outbox::stmt;
use crate::rpc::Rpc;
use crate::{AppError, ErrorCode};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// The table a service keeps its creates' keys in.
pub const DDL: &str = "CREATE TABLE create_keys (
    scope TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    reply TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now())";

/// `value` as a fingerprint reads it: texts trimmed (the creates trim
/// them: "草原人家 " makes the homestay "草原人家" makes), and fields left
/// at nothing — null, false, 0, "", [] or {} — left out, in objects at
/// every depth, so that a field added to a request later with such a
/// default does not make a retry sent across the upgrade another request.
pub fn canonical(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let nothing = |v: &Value| match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    match value {
        Value::String(s) => Value::String(s.trim().to_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, canonical(v)))
                .filter(|(_, v)| !nothing(v))
                .collect(),
        ),
        other => other,
    }
}

/// A create's key and its request's fingerprint, or none (no key sent:
/// every request is a new create).
pub struct CreateKey(Option<(String, String)>);

impl CreateKey {
    /// `key` (scoped to its caller) for `request`'s method, and the
    /// fingerprint of `request`: its JSON without who asks and the key
    /// itself (a retry with a token refreshed since is the same request),
    /// read as the create reads it ([`canonical`]).
    pub fn of<R: Rpc>(request: &R, key: Option<&str>) -> Result<CreateKey, AppError> {
        let method = R::METHOD;
        let Some(key) = key else {
            return Ok(CreateKey(None));
        };
        let mut body = serde_json::to_value(request).map_err(AppError::internal)?;
        if let Some(fields) = body.as_object_mut() {
            fields.remove("by");
            fields.remove("idempotency_key");
        }
        let fingerprint = hex::encode(Sha256::digest(canonical(body).to_string().as_bytes()));
        Ok(CreateKey(Some((format!("{method}:{key}"), fingerprint))))
    }

    /// The answer of the create made first with this key, if one was:
    /// IDEMPOTENCY_KEY_REUSED when that was another request.
    pub async fn replay<T: DeserializeOwned, C: ConnectionTrait>(
        &self,
        conn: &C,
    ) -> Result<Option<T>, AppError> {
        let Some((scope, fingerprint)) = &self.0 else {
            return Ok(None);
        };
        let b = conn.get_database_backend();
        let Some(row) = conn
            .query_one_raw(stmt(
                b,
                "SELECT fingerprint, reply FROM create_keys WHERE scope = $1",
                vec![scope.clone().into()],
            ))
            .await?
        else {
            return Ok(None);
        };
        let first: String = row.try_get("", "fingerprint")?;
        if first != *fingerprint {
            return Err(AppError::new(
                ErrorCode::IdempotencyKeyReused,
                "this idempotencyKey was used for a different request; a new one needs a new key",
            ));
        }
        let reply: String = row.try_get("", "reply")?;
        Ok(Some(
            serde_json::from_str(&reply).map_err(AppError::internal)?,
        ))
    }

    /// Keeps `reply` under the key in the create's transaction; false when
    /// a request with the same key took it meanwhile (committed by now:
    /// answer with [`Self::replay`], this create rolled back).
    pub async fn remember<T: Serialize, C: ConnectionTrait>(
        &self,
        conn: &C,
        reply: &T,
    ) -> Result<bool, AppError> {
        let Some((scope, fingerprint)) = &self.0 else {
            return Ok(true);
        };
        let reply = serde_json::to_string(reply).map_err(AppError::internal)?;
        let b = conn.get_database_backend();
        let kept = conn
            .execute_raw(stmt(
                b,
                "INSERT INTO create_keys (scope, fingerprint, reply) VALUES ($1, $2, $3)
                 ON CONFLICT (scope) DO NOTHING",
                vec![
                    scope.clone().into(),
                    fingerprint.clone().into(),
                    reply.into(),
                ],
            ))
            .await?;
        Ok(kept.rows_affected() > 0)
    }

    /// The answer for a create whose key a concurrent request took first
    /// ([`Self::remember`] false): that request's.
    pub async fn taken<T: DeserializeOwned, C: ConnectionTrait>(
        &self,
        conn: &C,
    ) -> Result<T, AppError> {
        self.replay(conn).await?.ok_or_else(|| {
            AppError::new(
                ErrorCode::ServiceUnavailable,
                "a request with this idempotencyKey is being made; send it again shortly",
            )
        })
    }

    /// Keeps `reply` under the key in `txn` and commits the create
    /// ([`crate::db::commit_once_in_time`]); the first request's answer
    /// instead when a concurrent one with the same key took it (this
    /// create rolled back).
    pub async fn commit<T: Serialize + DeserializeOwned>(
        &self,
        txn: DatabaseTransaction,
        db: &DatabaseConnection,
        reply: T,
    ) -> Result<T, AppError> {
        if !self.remember(&txn, &reply).await? {
            txn.rollback().await?;
            return self.taken(db).await;
        }
        crate::db::commit_once_in_time(txn).await?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::canonical;
    use serde_json::json;

    #[test]
    fn a_fingerprint_reads_texts_trimmed_and_defaults_as_absent() {
        let sent = json!({ "name": " 草原人家 ", "name_en": "", "unpublished": false,
                           "room_type": { "rooms": 3, "beds": 0, "photos": [] },
                           "host_id": null, "itinerary": ["150430", " 150400"] });
        let read = json!({ "name": "草原人家", "room_type": { "rooms": 3 },
                           "itinerary": ["150430", "150400"] });
        assert_eq!(canonical(sent), read);
        assert_ne!(
            canonical(json!({ "seats": 8 })),
            canonical(json!({ "seats": 9 }))
        );
    }
}
