//! The DynamoDB store (official `aws-sdk-dynamodb`).
//!
//! Writes: items are de-duplicated by key, turned into PutRequests and sent as
//! BatchWriteItem calls of at most 25 (DynamoDB's limit, enforced here: moto accepts more),
//! `write_concurrency` at once. UnprocessedItems and throttling errors are retried with full
//! jitter exponential backoff, bounded by `max_write_attempts`; past that the write fails
//! and the caller (the consumer) naks, so the bus redelivers. Puts overwrite: a redelivered
//! event rewrites its own item.
//!
//! Reads: Query on `pk` with `sk BETWEEN`, ScanIndexForward for the order, expired items and
//! other types removed by a FilterExpression; DynamoDB applies `Limit` before the filter, so
//! the store keeps querying until the page is full or the user's range ends, bounded by
//! `max_scanned_per_request` (then the page is short and carries a cursor).

use std::collections::HashMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Region;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest, ScalarAttributeType,
    TableStatus, TimeToLiveSpecification, TimeToLiveStatus, WriteRequest,
};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use crate::config::DynamoConfig;
use crate::item::{Attrs, Item, attr, range_bounds};
use crate::store::{Order, Page, PageQuery, Store, StoreError, dedup};

/// DynamoDB's limit of requests in one BatchWriteItem.
pub const MAX_BATCH_WRITE: usize = 25;
/// DynamoDB's limit of values in an `IN` list.
pub const MAX_TYPES: usize = 100;

/// The DynamoDB store.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    cfg: DynamoConfig,
}

/// What `init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The table was created now (else it existed).
    pub created: bool,
    /// TTL was enabled now (else it was already).
    pub ttl_enabled: bool,
}

fn backend<E: std::error::Error + 'static>(e: E) -> StoreError {
    StoreError::Backend(DisplayErrorContext(e).to_string())
}

/// The AWS client: region and credentials from the standard environment (region defaults to
/// us-east-1), `endpoint_url` (else `AWS_ENDPOINT_URL`) for a DynamoDB-compatible server,
/// rustls (ring) over hyper, SDK retries on top of which the write loop adds its own.
pub async fn client(cfg: &DynamoConfig) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let loader = || {
        let mut l = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http.clone())
            .retry_config(RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(cfg.backoff_base_ms)))
            .timeout_config(
                TimeoutConfig::builder().connect_timeout(Duration::from_secs(3)).operation_attempt_timeout(Duration::from_secs(10)).build(),
            );
        if let Some(e) = &cfg.endpoint_url {
            l = l.endpoint_url(e);
        }
        if let Some(r) = &cfg.region {
            l = l.region(Region::new(r.clone()));
        }
        l
    };
    // The standard region chain (environment, profile, instance metadata), else us-east-1.
    let sdk = loader().load().await;
    if sdk.region().is_some() {
        return Client::new(&sdk);
    }
    Client::new(&loader().region(Region::new("us-east-1")).load().await)
}

impl DynamoStore {
    /// A store on the configured table (see [`client`]).
    pub async fn connect(cfg: &DynamoConfig) -> DynamoStore {
        DynamoStore { client: client(cfg).await, cfg: cfg.clone() }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.cfg.table
    }

    /// Creates the table (pk/sk strings, on-demand billing) if missing, waits until it is
    /// active, and enables TTL on `ttl` if it is not. Idempotent.
    pub async fn init(&self) -> Result<InitReport, StoreError> {
        let table = &self.cfg.table;
        let key = |name: &str, kt: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(kt).build().map_err(backend);
        let def = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().map_err(backend)
        };
        let created = match self
            .client
            .create_table()
            .table_name(table)
            .key_schema(key(attr::PK, KeyType::Hash)?)
            .key_schema(key(attr::SK, KeyType::Range)?)
            .attribute_definitions(def(attr::PK)?)
            .attribute_definitions(def(attr::SK)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => false,
            Err(e) => return Err(backend(e)),
        };
        for _ in 0..120 {
            let d = self.client.describe_table().table_name(table).send().await.map_err(backend)?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let ttl = self.client.describe_time_to_live().table_name(table).send().await.map_err(backend)?;
        let status = ttl.time_to_live_description().and_then(|d| d.time_to_live_status());
        let ttl_enabled = if matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)) {
            false
        } else {
            let spec = TimeToLiveSpecification::builder().attribute_name(attr::TTL).enabled(true).build().map_err(backend)?;
            self.client.update_time_to_live().table_name(table).time_to_live_specification(spec).send().await.map_err(backend)?;
            true
        };
        Ok(InitReport { created, ttl_enabled })
    }

    /// Deletes the table (tests, benchmarks).
    pub async fn drop_table(&self) -> Result<(), StoreError> {
        self.client.delete_table().table_name(&self.cfg.table).send().await.map_err(backend)?;
        Ok(())
    }

    async fn put(&self, items: &[Item]) -> Result<(), StoreError> {
        let requests = dedup(items).into_iter().map(write_request).collect::<Result<Vec<_>, _>>()?;
        let chunks: Vec<Vec<WriteRequest>> = requests.chunks(MAX_BATCH_WRITE).map(<[WriteRequest]>::to_vec).collect();
        futures::stream::iter(chunks)
            .map(|c| self.write_chunk(c))
            .buffer_unordered(self.cfg.write_concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// One BatchWriteItem of at most 25 requests, retrying what is left unprocessed or
    /// throttled.
    async fn write_chunk(&self, mut pending: Vec<WriteRequest>) -> Result<(), StoreError> {
        let table = &self.cfg.table;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.client.batch_write_item().request_items(table, pending.clone()).send().await {
                Ok(out) => {
                    let left = out.unprocessed_items().and_then(|m| m.get(table)).cloned().unwrap_or_default();
                    if left.is_empty() {
                        return Ok(());
                    }
                    metrics::counter!("timeline_unprocessed_items_total").increment(left.len() as u64);
                    tracing::debug!(left = left.len(), attempt, "unprocessed items; retrying");
                    pending = left;
                }
                Err(e) if retryable(&e) => {
                    metrics::counter!("timeline_write_throttled_total").increment(1);
                    tracing::debug!(error = %DisplayErrorContext(&e), attempt, "write throttled or failed transiently; retrying");
                }
                Err(e) if refused(&e) => return Err(StoreError::Refused(DisplayErrorContext(e).to_string())),
                Err(e) => return Err(backend(e)),
            }
            if attempt >= self.cfg.max_write_attempts {
                return Err(StoreError::Throttled { attempts: attempt, left: pending.len() });
            }
            tokio::time::sleep(self.cfg.backoff(attempt)).await;
        }
    }

    async fn page(&self, q: &PageQuery) -> Result<Page, StoreError> {
        let (lo, hi) = range_bounds(q.from, q.to);
        let mut filter = "#ttl > :now".to_owned();
        let mut values = HashMap::from([
            (":pk".to_owned(), AttributeValue::S(q.user.clone())),
            (":lo".to_owned(), AttributeValue::S(lo)),
            (":hi".to_owned(), AttributeValue::S(hi)),
            (":now".to_owned(), AttributeValue::N(q.now_secs.to_string())),
        ]);
        let mut names = HashMap::from([("#ttl".to_owned(), attr::TTL.to_owned())]);
        if !q.types.is_empty() {
            let list: Vec<String> = (0..q.types.len().min(MAX_TYPES)).map(|i| format!(":t{i}")).collect();
            filter.push_str(&format!(" AND #t IN ({})", list.join(", ")));
            for (k, t) in list.iter().zip(&q.types) {
                values.insert(k.clone(), AttributeValue::S(t.clone()));
            }
            names.insert("#t".to_owned(), attr::TYPE.to_owned());
        }
        let mut start = q.after.as_ref().map(|sk| {
            HashMap::from([(attr::PK.to_owned(), AttributeValue::S(q.user.clone())), (attr::SK.to_owned(), AttributeValue::S(sk.clone()))])
        });
        let mut items = Vec::with_capacity(q.limit.min(1024));
        let mut scanned = 0usize;
        loop {
            let want = q.limit - items.len();
            // Without a type filter, one more than needed tells whether another page exists.
            let limit = if q.types.is_empty() { Some(i32::try_from(want + 1).unwrap_or(i32::MAX)) } else { None };
            let out = self
                .client
                .query()
                .table_name(&self.cfg.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .filter_expression(&filter)
                .set_expression_attribute_values(Some(values.clone()))
                .set_expression_attribute_names(Some(names.clone()))
                .scan_index_forward(q.order == Order::Asc)
                .set_exclusive_start_key(start.take())
                .set_limit(limit)
                .send()
                .await
                .map_err(backend)?;
            scanned += usize::try_from(out.scanned_count()).unwrap_or(0);
            for raw in out.items() {
                if items.len() == q.limit {
                    let next_after = items.last().map(|i: &Item| i.sk.clone());
                    return Ok(Page { items, next_after });
                }
                items.push(parse(&q.user, raw)?);
            }
            match out.last_evaluated_key() {
                None => return Ok(Page { items, next_after: None }),
                Some(k) if scanned >= self.cfg.max_scanned_per_request => {
                    // Bounded work per request: a short page that continues where the read stopped.
                    let next_after = match k.get(attr::SK) {
                        Some(AttributeValue::S(s)) => Some(s.clone()),
                        _ => items.last().map(|i| i.sk.clone()),
                    };
                    return Ok(Page { items, next_after });
                }
                Some(k) => start = Some(k.clone()),
            }
        }
    }
}

/// Throttling, request limits, server errors and transport failures are worth retrying.
fn retryable<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "ReplicatedWriteConflictException"
            )
        ),
        _ => false,
    }
}

/// DynamoDB refused the items themselves (a key too long, an item too large...).
fn refused<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(s) if s.err().code() == Some("ValidationException"))
}

fn write_request(it: &Item) -> Result<WriteRequest, StoreError> {
    let mut m = HashMap::with_capacity(7);
    m.insert(attr::PK.to_owned(), AttributeValue::S(it.user.clone()));
    m.insert(attr::SK.to_owned(), AttributeValue::S(it.sk.clone()));
    m.insert(attr::TYPE.to_owned(), AttributeValue::S(it.event_type.clone()));
    m.insert(attr::LAKE.to_owned(), AttributeValue::S(it.lake.clone()));
    m.insert(attr::TTL.to_owned(), AttributeValue::N(it.expires_at.to_string()));
    match &it.attrs {
        Some(Attrs::Json(s)) => {
            m.insert(attr::ATTRS_JSON.to_owned(), AttributeValue::S(s.clone()));
        }
        Some(Attrs::Zstd(z)) => {
            m.insert(attr::ATTRS_ZSTD.to_owned(), AttributeValue::B(Blob::new(z.clone())));
        }
        None => {}
    }
    let put = PutRequest::builder().set_item(Some(m)).build().map_err(backend)?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn parse(user: &str, m: &HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let s = |k: &str| match m.get(k) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(StoreError::Corrupt(format!("item of {user} without string attribute {k}"))),
    };
    let attrs = match (m.get(attr::ATTRS_JSON), m.get(attr::ATTRS_ZSTD)) {
        (Some(AttributeValue::S(j)), _) => Some(Attrs::Json(j.clone())),
        (_, Some(AttributeValue::B(b))) => Some(Attrs::Zstd(b.clone().into_inner())),
        _ => None,
    };
    let expires_at = match m.get(attr::TTL) {
        Some(AttributeValue::N(n)) => n.parse().map_err(|_| StoreError::Corrupt(format!("bad ttl {n}")))?,
        _ => return Err(StoreError::Corrupt("item without ttl".into())),
    };
    Ok(Item { user: user.to_owned(), sk: s(attr::SK)?, event_type: s(attr::TYPE)?, attrs, lake: s(attr::LAKE)?, expires_at })
}

impl Store for DynamoStore {
    fn put_batch<'a>(&'a self, items: &'a [Item]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.put(items))
    }
    fn query<'a>(&'a self, q: &'a PageQuery) -> BoxFuture<'a, Result<Page, StoreError>> {
        Box::pin(self.page(q))
    }
    fn is_ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.client.describe_table().table_name(&self.cfg.table).send().await.is_ok() })
    }
}
