//! `kube::Client`s for the local cluster (kubeconfig or in-cluster) and for each remote:
//! a kubeconfig, or `remoteAPIURL` + the CA fetched as PEM from `remoteCAURL` + a bearer
//! token file that kube-client re-reads (so projected, rotating tokens keep working).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::http_metrics::{CountingLayer, RequestCounts};
use crate::token::{TokenFile, TokenLayer};

use crate::config::RemoteAccess;

/// A client could not be built. Retrying may help when the cause is outside the config
/// (a CA URL that is down, a token not yet mounted); the agent retries with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A kubeconfig file that cannot be read or used.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig given and not running in a pod.
    #[error("in-cluster configuration")]
    InCluster(#[source] kube::config::InClusterError),
    /// `remoteAPIURL` is not a URL.
    #[error("remoteAPIURL {url:?}")]
    ApiUrl {
        /// The value.
        url: String,
        /// Why.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// `remoteCAURL` is not a URL.
    #[error("remoteCAURL {url:?}")]
    CaUrl {
        /// The value.
        url: String,
        /// Why.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// Fetching the CA from `remoteCAURL` failed.
    #[error("remoteCAURL {url}")]
    CaFetch {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// `remoteCAURL` answered without a PEM certificate.
    #[error("remoteCAURL {url}: no PEM certificate in the response")]
    NoCertificate {
        /// The URL.
        url: String,
    },
    /// The bearer token file cannot be used.
    #[error("remoteSATokenPath {path}")]
    Token {
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// kube-client refused the configuration.
    #[error("{what} client")]
    Build {
        /// Which client.
        what: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// The local cluster's client: from `kubeconfig`, or the in-cluster service account.
/// Its requests are counted in `counts`.
pub async fn local_client(
    kubeconfig: Option<&str>,
    counts: &RequestCounts,
) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => from_kubeconfig(path).await?,
        None => Config::incluster().map_err(ClientError::InCluster)?,
    };
    counted(config, counts).map_err(|source| ClientError::Build {
        what: "local cluster",
        source,
    })
}

/// kube-client retries 429, 503 and 504 inside each request by default, with a backoff
/// that grows to minutes: after an outage the watcher would wait for that request instead
/// of retrying on its own short, capped schedule (`sync.rs`). Our loops retry themselves.
fn own_retries(mut config: Config) -> Config {
    config.default_retry = false;
    config
}

/// A client whose requests are counted under the API server's `host:port`.
fn counted(config: Config, counts: &RequestCounts) -> Result<Client, kube::Error> {
    let config = own_retries(config);
    let host = config
        .cluster_url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CountingLayer::new(host, counts.clone()))
        .build())
}

/// A remote cluster's client; its requests are counted in `counts`.
pub async fn remote_client(
    access: &RemoteAccess,
    counts: &RequestCounts,
) -> Result<Client, ClientError> {
    let config = match access {
        RemoteAccess::KubeConfig(path) => from_kubeconfig(path).await?,
        RemoteAccess::InCluster => Config::incluster().map_err(ClientError::InCluster)?,
        RemoteAccess::Token {
            api_url,
            ca_url,
            token_path,
        } => {
            let uri = api_url.parse().map_err(|source| ClientError::ApiUrl {
                url: api_url.clone(),
                source,
            })?;
            let mut config = Config::new(uri);
            if api_url.starts_with("https://") {
                let pem = fetch_text(ca_url).await?;
                let ders = pem_certificates(&pem);
                if ders.is_empty() {
                    return Err(ClientError::NoCertificate {
                        url: ca_url.clone(),
                    });
                }
                config.root_cert = Some(ders);
            }
            let token = TokenFile::open(token_path).map_err(|source| ClientError::Token {
                path: token_path.clone(),
                source,
            })?;
            let host = config
                .cluster_url
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let builder = ClientBuilder::try_from(own_retries(config)).map_err(|source| {
                ClientError::Build {
                    what: "remote cluster",
                    source,
                }
            })?;
            return Ok(builder
                .with_layer(&TokenLayer(token))
                .with_layer(&CountingLayer::new(host, counts.clone()))
                .build());
        }
    };
    counted(config, counts).map_err(|source| ClientError::Build {
        what: "remote cluster",
        source,
    })
}

async fn from_kubeconfig(path: &str) -> Result<Config, ClientError> {
    let err = |source| ClientError::Kubeconfig {
        path: path.to_string(),
        source,
    };
    let kc = Kubeconfig::read_from(path).map_err(err)?;
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(err)
}

/// GETs `url` (http or https with the system's roots) and returns the body.
async fn fetch_text(url: &str) -> Result<String, ClientError> {
    let bad_url = |source| ClientError::CaUrl {
        url: url.to_string(),
        source,
    };
    let fetch = |source| ClientError::CaFetch {
        url: url.to_string(),
        source,
    };
    let uri: http::Uri = url.parse().map_err(bad_url)?;
    let base = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map(|a| a.as_str()).unwrap_or("")
    );
    let config = Config::new(base.parse().map_err(bad_url)?);
    let client = Client::try_from(config).map_err(fetch)?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| fetch(kube::Error::HttpError(e)))?;
    client.request_text(req).await.map_err(fetch)
}

/// The DER bytes of every `CERTIFICATE` block in a PEM document.
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (&mut body, line) {
            (None, "-----BEGIN CERTIFICATE-----") => body = Some(String::new()),
            (Some(b), "-----END CERTIFICATE-----") => {
                if let Ok(der) = STANDARD.decode(b.as_bytes()) {
                    out.push(der);
                }
                body = None;
            }
            (Some(b), l) => b.push_str(l),
            (None, _) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_decoded() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(pem), vec![vec![0, 1, 2, 3], vec![4, 5]]);
        assert!(pem_certificates("nothing here").is_empty());
        assert!(
            pem_certificates("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----")
                .is_empty()
        );
    }
}
