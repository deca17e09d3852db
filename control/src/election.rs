//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
//! does it: the holder renews the Lease every [`ElectionTiming::retry`]; another
//! candidate takes it over once it has seen no change to the Lease for its
//! `leaseDurationSeconds` (measured on its own clock, so clock skew between nodes does not
//! matter); every write carries the resourceVersion it read, so of two candidates racing
//! one wins and the other gets a conflict. A leader whose renewals fail for
//! [`ElectionTiming::renew_deadline`] stops leading before anyone else may start.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::time::Instant;

/// How fast leadership moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTiming {
    /// `leaseDurationSeconds`: how long others wait after the last change they saw.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops leading (shorter than the lease
    /// duration, so it stops before another may start).
    pub renew_deadline: Duration,
    /// How often every candidate looks at the Lease (and the leader renews it).
    pub retry: Duration,
}

impl Default for ElectionTiming {
    /// 10 s / 7 s / 2 s: a dead leader is replaced 10–12 s after its last renewal.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(7),
            retry: Duration::from_secs(2),
        }
    }
}

/// One candidate's view of one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: ElectionTiming,
    /// The resourceVersion last seen and when (our clock).
    observed: Option<(String, Instant)>,
    /// Leading since (the Lease's acquireTime), and the last successful renewal.
    leading: Option<(Timestamp, Instant)>,
}

/// Outcome of one look at the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// We hold the Lease, acquired at this time.
    Leading(Timestamp),
    /// Someone else holds it (their identity), or nobody may take it yet.
    Following(Option<String>),
}

impl Elector {
    /// A candidate `identity` for Lease `name` of `api`'s namespace.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: ElectionTiming) -> Self {
        Self {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
            leading: None,
        }
    }

    /// Since when we lead, if we do.
    pub fn leading_since(&self) -> Option<Timestamp> {
        self.leading.map(|(t, _)| t)
    }

    /// One round: acquire or renew when `may_lead`, give the Lease up when we hold it and
    /// may not lead. An API error keeps a leader leading until its renew deadline passes.
    pub async fn round(&mut self, may_lead: bool) -> Result<Round, kube::Error> {
        match self.try_round(may_lead).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if let Some((_, renewed)) = self.leading
                    && renewed.elapsed() >= self.timing.renew_deadline
                {
                    self.leading = None;
                }
                Err(e)
            }
        }
    }

    async fn try_round(&mut self, may_lead: bool) -> Result<Round, kube::Error> {
        let pp = PostParams::default();
        // Micro-second precision, as the Lease stores it.
        let now = Timestamp::from_microsecond(Timestamp::now().as_microsecond())
            .unwrap_or_else(|_| Timestamp::now());
        let current = match self.api.get_opt(&self.name).await? {
            Some(l) => l,
            None if may_lead => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, now, 0)),
                };
                return match self.api.create(&pp, &lease).await {
                    Ok(_) => Ok(self.lead(now)),
                    Err(e) if is_conflict(&e) => Ok(Round::Following(None)),
                    Err(e) => Err(e),
                };
            }
            None => return Ok(Round::Following(None)),
        };
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        if self.observed.as_ref().map(|(r, _)| r) != Some(&rv) {
            self.observed = Some((rv, Instant::now()));
        }
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if mine && !may_lead {
            self.release_from(current).await?;
            return Ok(Round::Following(None));
        }
        let expired = holder.is_none() || {
            let duration = spec
                .lease_duration_seconds
                .map_or(self.timing.lease_duration, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                });
            self.observed
                .as_ref()
                .is_some_and(|(_, seen)| seen.elapsed() >= duration)
        };
        if !may_lead || (!mine && !expired) {
            self.leading = None;
            return Ok(Round::Following(holder));
        }
        // Renew ours (keeping its acquire time), or take it over.
        let (acquired, transitions) = if mine {
            let acquired = spec.acquire_time.map_or(now, |t| t.0);
            (acquired, spec.lease_transitions.unwrap_or(0))
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        let mut next = current;
        next.spec = Some(self.spec(acquired, now, transitions));
        match self.api.replace(&self.name, &pp, &next).await {
            Ok(written) => {
                let rv = written.metadata.resource_version.unwrap_or_default();
                self.observed = Some((rv, Instant::now()));
                Ok(self.lead(acquired))
            }
            Err(e) if is_conflict(&e) => {
                self.leading = None;
                Ok(Round::Following(holder))
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we hold it (another candidate may take it at once).
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        self.leading = None;
        match self.api.get_opt(&self.name).await? {
            Some(l)
                if l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                    == Some(self.identity.as_str()) =>
            {
                self.release_from(l).await
            }
            _ => Ok(()),
        }
    }

    async fn release_from(&mut self, mut lease: Lease) -> Result<(), kube::Error> {
        self.leading = None;
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone wrote since: it is not ours any more.
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn lead(&mut self, acquired: Timestamp) -> Round {
        self.leading = Some((acquired, Instant::now()));
        Round::Leading(acquired)
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
