//! How the Redis store reaches Redis: a standalone server, a Redis Cluster or a Sentinel-managed
//! primary, all through the `redis` crate (no routing of our own).
//!
//! - Standalone: a `ConnectionManager` (multiplexed, reconnects to the same address by itself).
//! - Cluster: the crate's async `ClusterConnection` (multiplexed per node; it maps slots from the
//!   seeds, follows `MOVED`/`ASK` redirections and refreshes its slot map after a failover). A
//!   cluster pipeline must stay in one slot, so the store sends one pipeline per hash tag (see
//!   [`Conn::one_slot_per_pipeline`]), all at once: the round trips overlap.
//! - Sentinel: the sentinels are asked for the primary of the named master (the crate checks
//!   that the server answers `ROLE` as a master) and a multiplexed connection is made to it. It is
//!   not reconnected to the same address: after an error the store drops it
//!   ([`Conn::reresolve_on_error`]) and asks the sentinels again, which is how a promoted replica
//!   is followed without a restart.

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, Pipeline, RedisResult, Value};

use super::spec::{ConfigError, RedisConfig, RedisTopology};

/// What to connect to (built once from the configuration, validated up front).
pub(crate) enum Target {
    Single(redis::Client),
    Cluster(ClusterClient),
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// A live connection; cheap to clone (all three are multiplexed handles).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl Target {
    /// Checks the URLs of `cfg` and prepares the client (no I/O).
    pub fn new(cfg: &RedisConfig) -> Result<Self, ConfigError> {
        let bad = |e: redis::RedisError| ConfigError::RedisUrl(e.to_string());
        Ok(match &cfg.topology {
            RedisTopology::Standalone => {
                Target::Single(redis::Client::open(cfg.url.as_str()).map_err(bad)?)
            }
            RedisTopology::Cluster(seeds) => Target::Cluster(
                ClusterClient::builder(seeds.iter().map(String::as_str))
                    .connection_timeout(cfg.connect_timeout)
                    .response_timeout(cfg.timeout)
                    .retries(2)
                    .min_retry_wait(5)
                    .max_retry_wait(50)
                    .build()
                    .map_err(bad)?,
            ),
            RedisTopology::Sentinel { sentinels, master } => {
                // Validates the URLs and the name now; connecting happens later.
                SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    None,
                    SentinelServerType::Master,
                )
                .map_err(bad)?;
                Target::Sentinel {
                    sentinels: sentinels.clone(),
                    master: master.clone(),
                }
            }
        })
    }

    /// Makes a connection (bounded by the caller's timeout).
    pub async fn connect(&self, cfg: &RedisConfig) -> RedisResult<Conn> {
        match self {
            Target::Single(client) => {
                let c = ConnectionManagerConfig::new()
                    .set_connection_timeout(cfg.connect_timeout)
                    .set_number_of_retries(1)
                    .set_factor(10)
                    .set_max_delay(100);
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client.clone(), c).await?,
                ))
            }
            Target::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
            Target::Sentinel { sentinels, master } => {
                let mut sc = SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    None,
                    SentinelServerType::Master,
                )?;
                let client = sc.async_get_client().await?;
                let c = AsyncConnectionConfig::new()
                    .set_connection_timeout(cfg.connect_timeout)
                    .set_response_timeout(cfg.timeout);
                Ok(Conn::Sentinel(
                    client
                        .get_multiplexed_async_connection_with_config(&c)
                        .await?,
                ))
            }
        }
    }
}

impl Conn {
    /// Sends `pipe` and returns `count` replies starting at `offset` (one round trip).
    pub async fn pipeline(
        &mut self,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipe, offset, count).await,
            Conn::Cluster(c) => c.req_packed_commands(pipe, offset, count).await,
            Conn::Sentinel(c) => c.req_packed_commands(pipe, offset, count).await,
        }
    }

    /// Whether a pipeline may only address one slot (Redis Cluster).
    pub fn one_slot_per_pipeline(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Whether an error should drop this connection and look the server up again (Sentinel: the
    /// primary may have moved; the other kinds reconnect and re-route by themselves).
    pub fn reresolve_on_error(&self) -> bool {
        matches!(self, Conn::Sentinel(_))
    }
}
