//! The BACnet device driver: one device, one future that runs until aborted.
//!
//! Call order inside the loop: connect (find the device, learn its limits from its I-Am,
//! check its identity by reading its name), subscribe COV for the points that want it,
//! read every point once; then, until a request goes unanswered, poll the points without
//! an active subscription on the device's interval, take COV notifications as they come,
//! renew subscriptions before their lifetime runs out and serve writes between polls.
//! An unanswered poll makes every point bad with the reason and starts reconnecting with
//! backoff. It never sends two requests for the same point at once and keeps no history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bacnet_client::client::ReceivedCOVNotification;
use bacnet_services::rpm::{ReadAccessResult, ReadPropertyMultipleACK};
use bacnet_services::who_is::DeviceInstanceRange;
use bacnet_types::constructed::{PropertyReference, ReadAccessSpecification};
use bacnet_types::enums::{AbortReason, ObjectType, PropertyIdentifier, RejectReason};
use bacnet_types::error::{Error as BnError, RemoteError};
use bacnet_types::primitives::ObjectIdentifier;
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::bacnet::value::{
    Reading, StatusFlags, decode_present_value, encode_write, error_text, same_value,
};
use crate::bacnet::{BacnetError, Client, Command, Network, address_of, mac_of};
use crate::device::{BacnetLink, Connection, DeviceSpec};
use crate::driver::{Backoff, DeviceStatus, DriverOutput, WriteError};
use crate::profile::{BacnetPoint, PointSource, PointSpec};
use crate::sample::{PointKey, Sample, Timestamp, Value, now_micros};

const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Octets a ReadPropertyMultiple reply takes per object for present value and status
/// flags, counted generously (a double present value, a long instance); used to keep a
/// reply within one APDU.
const REPLY_OCTETS_PER_OBJECT: usize = 30;
/// Octets of a ComplexACK header, with room to spare.
const REPLY_HEADER_OCTETS: usize = 8;
/// The largest APDU this client accepts.
const OUR_MAX_APDU: usize = 1476;

/// Runs one BACnet device until the task is aborted.
///
/// Every `poll_interval` the points without an active COV subscription go out in one
/// `out.samples` batch with one timestamp: read values when the device answers, bad
/// samples with the reason when it does not; while the device is down, every point is bad
/// on each interval. COV notifications become samples as they arrive. Commands from
/// `writes` (plain [`crate::WriteRequest`]s or [`Command`]s with a priority or a
/// relinquish) are answered with the present value read back; while the device is down
/// they are refused at once with [`WriteError::Offline`].
pub async fn run_device<O, W>(spec: DeviceSpec, network: Network, out: O, writes: mpsc::Receiver<W>)
where
    O: DriverOutput,
    W: Into<Command> + Send + 'static,
{
    let span = info_span!("bacnet", device = %spec.id);
    run(spec, network, out, writes).instrument(span).await
}

/// A point of the device, with what the driver needs to read it.
#[derive(Debug)]
struct Point {
    key: PointKey,
    spec: PointSpec,
    bacnet: BacnetPoint,
    object: ObjectIdentifier,
}

/// The profile's BACnet points, with their object identifiers.
fn points_of(spec: &DeviceSpec) -> Vec<Point> {
    spec.profile
        .points
        .iter()
        .filter_map(|p| match &p.source {
            PointSource::Bacnet(b) => Some(Point {
                key: PointKey::new(&spec.id, &p.name),
                spec: p.clone(),
                bacnet: b.clone(),
                object: ObjectIdentifier::new(
                    ObjectType::from_raw(b.object_type.code()),
                    b.instance,
                )
                .ok()?,
            }),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Cov {
    /// The profile does not ask for COV: polled.
    NotWanted,
    /// Asked for, not confirmed yet (or the last attempt got no answer): polled, and
    /// subscribed again at `retry_at`.
    Pending { retry_at: Instant },
    /// Subscribed: not polled; renewed at `renew_at`.
    Active { renew_at: Instant },
    /// The device refused: polled from now on.
    Refused,
}

/// An answered connection to the device.
struct Session {
    client: Arc<Client>,
    mac: [u8; 6],
    /// Objects per ReadPropertyMultiple; halved when a device says a reply is too large.
    chunk: usize,
    /// Objects whose reply fits in one APDU of this device.
    fit: usize,
    /// Whether the device implements ReadPropertyMultiple.
    rpm: bool,
    cov: Vec<Cov>,
    notifications: broadcast::Receiver<ReceivedCOVNotification>,
    /// Notifications were lost (the channel lagged): read every point at the next poll.
    resync: bool,
}

impl Session {
    fn next_renewal(&self) -> Option<Instant> {
        self.cov
            .iter()
            .filter_map(|c| match c {
                Cov::Pending { retry_at } => Some(*retry_at),
                Cov::Active { renew_at } => Some(*renew_at),
                _ => None,
            })
            .min()
    }
}

/// How a request failed, as far as the driver's next step is concerned.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// No answer: the device is unreachable or down.
    NoAnswer(String),
    /// No (complete) answer in time: no answer at all, or a segmented reply that stopped.
    /// Which of the two, only the size of the reply asked for can tell.
    Stalled(String),
    /// The reply would be too large for the device to send (or for us to take).
    TooLarge(String),
    /// The device does not implement the service.
    Unsupported(String),
    /// The device answered with an error, reject or abort.
    Refused(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::NoAnswer(r)
            | Failure::Stalled(r)
            | Failure::TooLarge(r)
            | Failure::Unsupported(r)
            | Failure::Refused(r) => r,
        }
    }
}

fn classify(error: &BnError) -> Failure {
    match error {
        BnError::Timeout(d) => Failure::NoAnswer(format!("no answer within {} ms", d.as_millis())),
        BnError::Transport(e) => Failure::NoAnswer(format!("network error: {e}")),
        // The client gives this reason when a request's timer runs out, and also when a
        // segmented reply stopped coming, which is how
        // bacnet-client 0.15 fails against devices that propose a segment window above 1
        // (it waits for the whole window before acknowledging the first segment, the device
        // waits for that acknowledgement). The device did answer; smaller requests, whose
        // replies need no segments, will get through.
        BnError::Remote(RemoteError::Abort { reason }) if *reason == AbortReason::TSM_TIMEOUT => {
            Failure::Stalled("no answer (transaction timed out)".into())
        }
        BnError::Remote(RemoteError::Abort { reason })
            if *reason == AbortReason::SEGMENTATION_NOT_SUPPORTED
                || *reason == AbortReason::BUFFER_OVERFLOW =>
        {
            Failure::TooLarge(format!("device aborted: {}", abort_name(*reason)))
        }
        BnError::Segmentation(e) => Failure::TooLarge(format!("segmentation: {e}")),
        BnError::SendTooLong { .. } => Failure::TooLarge(error.to_string()),
        BnError::Remote(RemoteError::Reject { reason })
            if *reason == RejectReason::UNRECOGNIZED_SERVICE =>
        {
            Failure::Unsupported("device rejected the service as unrecognized".into())
        }
        BnError::Remote(RemoteError::Error { class, code }) => {
            Failure::Refused(error_text(*class, *code))
        }
        BnError::Structured { class, code, .. } => Failure::Refused(error_text(*class, *code)),
        BnError::Remote(RemoteError::Reject { reason }) => Failure::Refused(format!(
            "device rejected the request: {}",
            reason
                .name()
                .map(|n| n.to_ascii_lowercase().replace('_', "-"))
                .unwrap_or_else(|| reason.to_raw().to_string())
        )),
        BnError::Remote(RemoteError::Abort { reason }) => {
            Failure::Refused(format!("device aborted: {}", abort_name(*reason)))
        }
        other => Failure::Refused(other.to_string()),
    }
}

fn abort_name(reason: AbortReason) -> String {
    reason
        .name()
        .map(|n| n.to_ascii_lowercase().replace('_', "-"))
        .unwrap_or_else(|| reason.to_raw().to_string())
}

struct Device<O> {
    spec: DeviceSpec,
    link: BacnetLink,
    network: Network,
    out: O,
    points: Vec<Point>,
    by_object: HashMap<(u32, u32), usize>,
    process_id: u32,
    cov_lifetime: u32,
    /// Guard on every request, over the client's own timeout and retry.
    guard: Duration,
}

async fn run<O, W>(spec: DeviceSpec, network: Network, out: O, writes: mpsc::Receiver<W>)
where
    O: DriverOutput,
    W: Into<Command> + Send + 'static,
{
    let Connection::Bacnet(link) = spec.connection.clone() else {
        warn!(
            protocol = spec.protocol_name(),
            "Not a BACnet device; the driver stops."
        );
        return;
    };
    let points = points_of(&spec);
    let by_object = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                (p.object.object_type().to_raw(), p.object.instance_number()),
                i,
            )
        })
        .collect();
    let device = Device {
        process_id: network.process_id(),
        cov_lifetime: spec.profile.bacnet.cov_lifetime_s,
        guard: network.apdu_timeout() * 4 + Duration::from_secs(2),
        link,
        network,
        out,
        points,
        by_object,
        spec,
    };
    device.run(writes).await
}

impl<O: DriverOutput> Device<O> {
    async fn run<W: Into<Command> + Send + 'static>(self, writes: mpsc::Receiver<W>) {
        let mut writes = Some(writes);
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
        let mut session: Option<Session> = None;
        let mut down_reason: Arc<str> = "not connected yet".into();
        let mut last_status: Option<DeviceStatus> = None;
        let mut retry_at = Instant::now();
        let mut ticks = tokio::time::interval(self.spec.poll_interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick completes at once; the connect reads every point anyway.
        ticks.tick().await;

        enum Event<W> {
            Connect,
            Poll,
            Notification(Result<ReceivedCOVNotification, broadcast::error::RecvError>),
            Renew,
            Write(W),
        }

        loop {
            let renew_at = session.as_ref().and_then(Session::next_renewal);
            let event = tokio::select! {
                biased;
                _ = tokio::time::sleep_until(retry_at), if session.is_none() => Event::Connect,
                n = async {
                    match session.as_mut() {
                        Some(s) => s.notifications.recv().await,
                        None => std::future::pending().await,
                    }
                } => Event::Notification(n),
                _ = ticks.tick() => Event::Poll,
                _ = async {
                    match renew_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => Event::Renew,
                w = next_command(&mut writes) => Event::Write(w),
            };
            match event {
                Event::Connect => match self.connect().await {
                    Ok(mut s) => {
                        backoff.reset();
                        self.set_status(&mut last_status, DeviceStatus::Online);
                        self.subscribe_due(&mut s, true).await;
                        let all: Vec<usize> = (0..self.points.len()).collect();
                        let (samples, failure) = self.read(&mut s, &all, now_micros()).await;
                        self.out.samples(samples).await;
                        match failure {
                            None => session = Some(s),
                            Some(reason) => {
                                self.went_down(&mut last_status, &reason).await;
                                retry_at = Instant::now() + backoff.next_delay();
                                down_reason = reason;
                            }
                        }
                    }
                    Err(reason) => {
                        let delay = backoff.next_delay();
                        warn!(error = %reason, retry_in = ?delay, "BACnet device not reached.");
                        retry_at = Instant::now() + delay;
                        self.set_status(
                            &mut last_status,
                            DeviceStatus::Offline {
                                reason: reason.clone(),
                            },
                        );
                        down_reason = reason;
                    }
                },
                Event::Poll => {
                    let ts = now_micros();
                    let Some(s) = &mut session else {
                        self.out.samples(self.bad_batch(ts, &down_reason)).await;
                        continue;
                    };
                    let wanted: Vec<usize> = if s.resync {
                        s.resync = false;
                        (0..self.points.len()).collect()
                    } else {
                        (0..self.points.len())
                            .filter(|&i| !matches!(s.cov[i], Cov::Active { .. }))
                            .collect()
                    };
                    let failure = if wanted.is_empty() {
                        // Every point is pushed: ask the device something small, so that a
                        // device that went away is noticed on the poll interval.
                        self.heartbeat(s).await.err()
                    } else {
                        let (samples, failure) = self.read(s, &wanted, ts).await;
                        self.out.samples(samples).await;
                        failure
                    };
                    if let Some(reason) = failure {
                        session = None;
                        self.went_down(&mut last_status, &reason).await;
                        let delay = backoff.next_delay();
                        warn!(error = %reason, retry_in = ?delay, "BACnet device stopped answering.");
                        retry_at = Instant::now() + delay;
                        down_reason = reason;
                    }
                }
                Event::Notification(Ok(n)) => {
                    if let Some(s) = &mut session
                        && let Some(sample) = self.sample_of_notification(s, &n)
                    {
                        self.out.samples(vec![sample]).await;
                    }
                }
                Event::Notification(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    warn!(
                        missed,
                        "COV notifications were lost; reading every point again."
                    );
                    if let Some(s) = &mut session {
                        s.resync = true;
                    }
                }
                Event::Notification(Err(broadcast::error::RecvError::Closed)) => {
                    // The network was closed under us: start again with a new one.
                    session = None;
                    down_reason = "the BACnet network closed".into();
                    retry_at = Instant::now();
                }
                Event::Renew => {
                    if let Some(s) = &mut session {
                        self.subscribe_due(s, false).await;
                    }
                }
                Event::Write(command) => {
                    let Command {
                        point,
                        value,
                        priority,
                        reply,
                    } = command.into();
                    let result = match &mut session {
                        None => self
                            .prepare(&point, value.as_ref(), priority)
                            .and_then(|_| Err(WriteError::Offline(down_reason.to_string()))),
                        Some(s) => self.write(s, &point, value.as_ref(), priority).await,
                    };
                    match &result {
                        Ok(read_back) => {
                            info!(%point, value = ?value, %read_back, "BACnet write verified.")
                        }
                        Err(error) => warn!(%point, value = ?value, %error, "BACnet write failed."),
                    }
                    // The requester may have given up waiting; that is its business.
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn set_status(&self, last: &mut Option<DeviceStatus>, status: DeviceStatus) {
        if last.as_ref() != Some(&status) {
            self.out.status(&self.spec.id, status.clone());
            *last = Some(status);
        }
    }

    /// Every point bad with the reason, and the device offline.
    async fn went_down(&self, last: &mut Option<DeviceStatus>, reason: &Arc<str>) {
        self.set_status(
            last,
            DeviceStatus::Offline {
                reason: reason.clone(),
            },
        );
        self.out.samples(self.bad_batch(now_micros(), reason)).await;
    }

    fn bad_batch(&self, ts: Timestamp, reason: &Arc<str>) -> Vec<Sample> {
        self.points
            .iter()
            .map(|p| Sample::bad(p.key.clone(), ts, reason.clone()))
            .collect()
    }

    async fn request<T>(
        &self,
        fut: impl Future<Output = Result<T, BnError>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.guard, fut).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(Failure::NoAnswer(format!(
                "no answer within {} ms",
                self.guard.as_millis()
            ))),
        }
    }

    /// Finds the device, learns its limits and checks that it is the device configured.
    async fn connect(&self) -> Result<Session, Arc<str>> {
        let instance = self.link.instance;
        let client = self.network.client().await.map_err(|e| e.to_string())?;
        // Subscribed before any COV subscription, so that no notification is missed.
        let notifications = client.cov_notifications();
        let range = DeviceInstanceRange::new(instance, instance).map_err(|e| e.to_string())?;
        let mac = match self.link.address {
            Some(address) => {
                let mac = mac_of(address);
                let known = client
                    .get_device(instance)
                    .await
                    .is_some_and(|d| d.mac_address[..] == mac);
                if !known {
                    // Its I-Am tells the device's maximum APDU and segmentation; a device
                    // that does not answer Who-Is is still read, with safe defaults.
                    let _ = client.who_is_directed(&mac, Some(range)).await;
                    self.wait_for_i_am(&client, instance, Some(mac)).await;
                }
                mac
            }
            None => {
                let sent = if self.network.broadcasts_natively() {
                    client.who_is(Some(range)).await
                } else {
                    client
                        .who_is_directed(&mac_of(self.network.port().broadcast), Some(range))
                        .await
                };
                sent.map_err(|e| format!("cannot send Who-Is: {e}"))?;
                let device = self
                    .wait_for_i_am(&client, instance, None)
                    .await
                    .ok_or_else(|| format!("device {instance} did not answer a Who-Is"))?;
                let mac: [u8; 6] = device.mac_address[..]
                    .try_into()
                    .map_err(|_| format!("device {instance} answered from a routed address"))?;
                mac
            }
        };
        let name = self
            .request(client.read_property(
                &mac,
                ObjectIdentifier::new(ObjectType::DEVICE, instance).map_err(|e| e.to_string())?,
                PropertyIdentifier::OBJECT_NAME,
                None,
            ))
            .await
            .map_err(|f| match f {
                Failure::Refused(r) => format!(
                    "the device at {} is not device {instance} ({r})",
                    address_of(&mac).map(|a| a.to_string()).unwrap_or_default()
                ),
                other => other.reason().to_string(),
            })?;
        let max_apdu = client
            .get_device(instance)
            .await
            .filter(|d| d.mac_address[..] == mac)
            .map(|d| d.max_apdu_length as usize)
            .unwrap_or(480)
            .min(OUR_MAX_APDU);
        let fit = ((max_apdu - REPLY_HEADER_OCTETS) / REPLY_OCTETS_PER_OBJECT).max(1);
        let chunk = match self.spec.profile.bacnet.max_objects_per_request {
            Some(n) => n as usize,
            None => fit,
        };
        let name = bacnet_encoding::primitives::decode_application_value(&name.property_value, 0)
            .ok()
            .and_then(|(v, _)| match v {
                bacnet_types::primitives::PropertyValue::CharacterString(s) => Some(s),
                _ => None,
            })
            .unwrap_or_default();
        info!(
            address = %address_of(&mac).map(|a| a.to_string()).unwrap_or_default(),
            %name, max_apdu, chunk, "BACnet device answered."
        );
        let cov = self
            .points
            .iter()
            .map(|p| {
                if p.bacnet.cov {
                    Cov::Pending {
                        retry_at: Instant::now(),
                    }
                } else {
                    Cov::NotWanted
                }
            })
            .collect();
        Ok(Session {
            client,
            mac,
            chunk,
            fit,
            rpm: true,
            cov,
            notifications,
            resync: false,
        })
    }

    /// Waits up to the device's timeout for its I-Am to reach the client's device table.
    async fn wait_for_i_am(
        &self,
        client: &Client,
        instance: u32,
        mac: Option<[u8; 6]>,
    ) -> Option<bacnet_client::discovery::DiscoveredDevice> {
        let deadline = Instant::now() + self.spec.timeout;
        loop {
            if let Some(d) = client.get_device(instance).await
                && mac.is_none_or(|m| d.mac_address[..] == m)
            {
                return Some(d);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn heartbeat(&self, s: &Session) -> Result<(), Arc<str>> {
        let device = ObjectIdentifier::new(ObjectType::DEVICE, self.link.instance)
            .map_err(|e| Arc::<str>::from(e.to_string()))?;
        match self
            .request(s.client.read_property(
                &s.mac,
                device,
                PropertyIdentifier::SYSTEM_STATUS,
                None,
            ))
            .await
        {
            Err(Failure::NoAnswer(r) | Failure::Stalled(r)) => Err(r.into()),
            _ => Ok(()),
        }
    }

    /// Reads the points `wanted` (indexes into `self.points`): one sample each. Returns the
    /// samples and, when the device answered none of the requests, why.
    async fn read(
        &self,
        s: &mut Session,
        wanted: &[usize],
        ts: Timestamp,
    ) -> (Vec<Sample>, Option<Arc<str>>) {
        let mut samples = Vec::with_capacity(wanted.len());
        let mut answered = false;
        let mut no_answer: Option<String> = None;
        let mut queue: Vec<Vec<usize>> = wanted
            .chunks(s.chunk.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        while !queue.is_empty() {
            if !s.rpm {
                for i in queue.drain(..).flatten() {
                    match self.read_one(s, i, ts).await {
                        Ok(sample) => {
                            answered = true;
                            samples.push(sample);
                        }
                        Err(Failure::NoAnswer(r) | Failure::Stalled(r)) => {
                            samples.push(Sample::bad(self.points[i].key.clone(), ts, r.clone()));
                            no_answer = Some(r);
                        }
                        Err(f) => {
                            answered = true;
                            samples.push(Sample::bad(self.points[i].key.clone(), ts, f.reason()));
                        }
                    }
                }
                break;
            }
            let batch = std::mem::take(&mut queue);
            let client = s.client.clone();
            let mac = s.mac;
            let results: Vec<(Vec<usize>, Result<ReadPropertyMultipleACK, Failure>)> =
                futures_util::stream::iter(batch)
                    .map(|chunk| {
                        let specs = chunk.iter().map(|&i| self.read_spec(i)).collect();
                        let client = client.clone();
                        async move {
                            let result = self
                                .request(client.read_property_multiple(&mac, specs))
                                .await;
                            (chunk, result)
                        }
                    })
                    .buffered(self.link.max_in_flight as usize)
                    .collect()
                    .await;
            for (chunk, result) in results {
                // A request whose reply needs segments and that timed out most likely
                // stalled in the segmented transfer; a small one just got no answer.
                let result = match result {
                    Err(Failure::Stalled(r)) if chunk.len() > s.fit => Err(Failure::TooLarge(
                        format!("the segmented reply stalled ({r})"),
                    )),
                    Err(Failure::Stalled(r)) => Err(Failure::NoAnswer(r)),
                    other => other,
                };
                match result {
                    Ok(ack) => {
                        answered = true;
                        samples.extend(self.samples_of_ack(&chunk, &ack, ts));
                    }
                    Err(Failure::TooLarge(r)) if chunk.len() > 1 => {
                        answered = true;
                        let half = chunk.len().div_ceil(2);
                        s.chunk = s.chunk.min(half);
                        debug!(reason = %r, chunk = s.chunk, "Reply too large; asking for fewer objects.");
                        queue.extend(chunk.chunks(half).map(<[usize]>::to_vec));
                    }
                    Err(Failure::Unsupported(r)) => {
                        answered = true;
                        info!(reason = %r, "No ReadPropertyMultiple; reading one property at a time.");
                        s.rpm = false;
                        queue.push(chunk);
                    }
                    Err(Failure::NoAnswer(r)) => {
                        samples.extend(
                            chunk
                                .iter()
                                .map(|&i| Sample::bad(self.points[i].key.clone(), ts, r.clone())),
                        );
                        no_answer = Some(r);
                    }
                    Err(f) => {
                        answered = true;
                        let reason: Arc<str> = f.reason().into();
                        samples.extend(
                            chunk.iter().map(|&i| {
                                Sample::bad(self.points[i].key.clone(), ts, reason.clone())
                            }),
                        );
                    }
                }
            }
        }
        let failure = match (answered, no_answer) {
            (false, Some(r)) => Some(r.into()),
            _ => None,
        };
        (samples, failure)
    }

    fn read_spec(&self, i: usize) -> ReadAccessSpecification {
        ReadAccessSpecification {
            object_identifier: self.points[i].object,
            list_of_property_references: vec![
                PropertyReference {
                    property_identifier: PropertyIdentifier::PRESENT_VALUE,
                    property_array_index: None,
                },
                PropertyReference {
                    property_identifier: PropertyIdentifier::STATUS_FLAGS,
                    property_array_index: None,
                },
            ],
        }
    }

    /// One sample per point of `chunk`, from the results the device sent for it.
    fn samples_of_ack(
        &self,
        chunk: &[usize],
        ack: &ReadPropertyMultipleACK,
        ts: Timestamp,
    ) -> Vec<Sample> {
        let results: HashMap<(u32, u32), &ReadAccessResult> = ack
            .list_of_read_access_results
            .iter()
            .map(|r| {
                (
                    (
                        r.object_identifier.object_type().to_raw(),
                        r.object_identifier.instance_number(),
                    ),
                    r,
                )
            })
            .collect();
        chunk
            .iter()
            .map(|&i| {
                let p = &self.points[i];
                let reading = match results
                    .get(&(p.object.object_type().to_raw(), p.object.instance_number()))
                {
                    None => Reading::bad("the device left the object out of its reply"),
                    Some(r) => self.reading_of(p, r),
                };
                Sample {
                    point: p.key.clone(),
                    ts,
                    value: reading.value,
                    quality: reading.quality,
                }
            })
            .collect()
    }

    fn reading_of(&self, p: &Point, r: &ReadAccessResult) -> Reading {
        let mut flags = None;
        let mut present = None;
        for e in &r.list_of_results {
            if e.property_identifier == PropertyIdentifier::STATUS_FLAGS {
                flags = e.property_value.as_deref().and_then(StatusFlags::decode);
            } else if e.property_identifier == PropertyIdentifier::PRESENT_VALUE {
                present = Some(match (&e.property_value, e.error) {
                    (Some(v), _) => Ok(v.as_slice()),
                    (None, Some((class, code))) => Err(error_text(class, code)),
                    (None, None) => Err("no present value in the reply".to_string()),
                });
            }
        }
        match present {
            Some(Ok(v)) => decode_present_value(&p.spec, &p.bacnet, v, flags),
            Some(Err(reason)) => Reading::bad(reason),
            None => Reading::bad("no present value in the reply"),
        }
    }

    /// Reads one point with ReadProperty, for devices without ReadPropertyMultiple.
    async fn read_one(&self, s: &Session, i: usize, ts: Timestamp) -> Result<Sample, Failure> {
        let p = &self.points[i];
        let ack = self
            .request(s.client.read_property(
                &s.mac,
                p.object,
                PropertyIdentifier::PRESENT_VALUE,
                None,
            ))
            .await?;
        let reading = decode_present_value(&p.spec, &p.bacnet, &ack.property_value, None);
        Ok(Sample {
            point: p.key.clone(),
            ts,
            value: reading.value,
            quality: reading.quality,
        })
    }

    /// Subscribes the points whose subscription is due (all that want one, on connect).
    async fn subscribe_due(&self, s: &mut Session, connecting: bool) {
        let now = Instant::now();
        let lifetime = self.cov_lifetime;
        // Renew with a fifth of the lifetime to spare, at least 5 s: a renewal that is
        // late by a lost request or two still lands before the device drops the
        // subscription.
        let margin = Duration::from_secs((lifetime as u64 / 5).max(5));
        let renew_after = Duration::from_secs(lifetime as u64).saturating_sub(margin);
        let retry_after = Duration::from_secs(10).min(renew_after);
        let due: Vec<usize> = (0..self.points.len())
            .filter(|&i| match s.cov[i] {
                Cov::Pending { retry_at } => connecting || retry_at <= now,
                Cov::Active { renew_at } => renew_at <= now,
                _ => false,
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let client = s.client.clone();
        let mac = s.mac;
        let results: Vec<(usize, Result<(), Failure>)> = futures_util::stream::iter(due)
            .map(|i| {
                let client = client.clone();
                let object = self.points[i].object;
                async move {
                    let result = self
                        .request(client.subscribe_cov(
                            &mac,
                            self.process_id,
                            object,
                            false,
                            Some(lifetime),
                        ))
                        .await;
                    (i, result)
                }
            })
            .buffered(self.link.max_in_flight as usize)
            .collect()
            .await;
        let (mut active, mut refused) = (0, 0);
        for (i, result) in results {
            let was_active = matches!(s.cov[i], Cov::Active { .. });
            s.cov[i] = match result {
                Ok(()) => {
                    active += 1;
                    Cov::Active {
                        renew_at: Instant::now() + renew_after,
                    }
                }
                Err(Failure::NoAnswer(r) | Failure::Stalled(r)) => {
                    debug!(point = %self.points[i].key, reason = %r, "COV subscription not answered; polling until it is.");
                    Cov::Pending {
                        retry_at: Instant::now() + retry_after,
                    }
                }
                Err(f) => {
                    refused += 1;
                    info!(point = %self.points[i].key, reason = %f.reason(), "Device refused COV; polling the point.");
                    Cov::Refused
                }
            };
            if was_active && !matches!(s.cov[i], Cov::Active { .. }) {
                // The point is polled again from the next interval on; until then its last
                // pushed value stands.
                s.resync = true;
            }
        }
        if active + refused > 0 {
            debug!(active, refused, lifetime, "COV subscriptions made.");
        }
    }

    fn sample_of_notification(&self, s: &Session, n: &ReceivedCOVNotification) -> Option<Sample> {
        let note = &n.notification;
        if note.subscriber_process_identifier != self.process_id
            || note.initiating_device_identifier.instance_number() != self.link.instance
            || n.source_mac[..] != s.mac
        {
            return None;
        }
        let object = note.monitored_object_identifier;
        let &i = self
            .by_object
            .get(&(object.object_type().to_raw(), object.instance_number()))?;
        let p = &self.points[i];
        let mut flags = None;
        let mut present = None;
        for v in &note.list_of_values {
            if v.property_identifier == PropertyIdentifier::PRESENT_VALUE {
                present = Some(v.value.as_slice());
            } else if v.property_identifier == PropertyIdentifier::STATUS_FLAGS {
                flags = StatusFlags::decode(&v.value);
            }
        }
        let reading = decode_present_value(&p.spec, &p.bacnet, present?, flags);
        Some(Sample {
            point: p.key.clone(),
            ts: now_micros(),
            value: reading.value,
            quality: reading.quality,
        })
    }

    /// Checks a command against the profile and encodes it; nothing is sent.
    fn prepare(
        &self,
        point: &str,
        value: Option<&Value>,
        priority: Option<u8>,
    ) -> Result<(usize, Vec<u8>, u8), WriteError> {
        let i = self
            .points
            .iter()
            .position(|p| p.spec.name == point)
            .ok_or_else(|| WriteError::UnknownPoint(point.to_string()))?;
        let p = &self.points[i];
        if !p.spec.writable || p.bacnet.object_type.is_input() {
            return Err(WriteError::NotWritable(point.to_string()));
        }
        let priority = priority.unwrap_or(p.bacnet.priority);
        if !(1..=16).contains(&priority) || priority == 6 {
            return Err(WriteError::OutOfRange {
                point: point.to_string(),
                value: value
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "null".into()),
                reason: format!("priority {priority} is not 1 to 16 (6 is reserved)"),
            });
        }
        let encoded = encode_write(&p.spec, &p.bacnet, value)?;
        Ok((i, encoded, priority))
    }

    /// Writes the present value at a priority (or relinquishes it), then reads it back.
    async fn write(
        &self,
        s: &mut Session,
        point: &str,
        value: Option<&Value>,
        priority: Option<u8>,
    ) -> Result<Value, WriteError> {
        let (i, encoded, priority) = self.prepare(point, value, priority)?;
        let p = &self.points[i];
        let written = self
            .request(s.client.write_property(
                &s.mac,
                p.object,
                PropertyIdentifier::PRESENT_VALUE,
                None,
                encoded,
                Some(priority),
            ))
            .await;
        match written {
            Ok(()) => {}
            Err(Failure::NoAnswer(_) | Failure::Stalled(_)) => {
                return Err(WriteError::Timeout(self.guard));
            }
            Err(f) => return Err(WriteError::Refused(f.reason().to_string())),
        }
        let (mut samples, failure) = self.read(s, &[i], now_micros()).await;
        if let Some(reason) = failure {
            return Err(WriteError::Offline(format!(
                "written, but the read-back got no answer: {reason}"
            )));
        }
        let sample = samples.pop().ok_or(WriteError::DriverStopped)?;
        let read_back = sample.value.clone();
        self.out.samples(vec![sample.clone()]).await;
        let Some(read_back) = read_back else {
            return Err(WriteError::VerifyFailed {
                written: value
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "null".into()),
                read_back: sample.quality.reason().unwrap_or("no value").to_string(),
            });
        };
        match value {
            // A relinquish succeeds whatever value takes over.
            None => Ok(read_back),
            Some(v) if same_value(v, &read_back) => Ok(read_back),
            Some(v) => Err(WriteError::VerifyFailed {
                written: v.to_string(),
                read_back: format!("{read_back} (a priority above {priority} may be in control)"),
            }),
        }
    }
}

/// The next command; pends forever once every sender is gone, so that a device whose
/// write channel closed keeps polling.
async fn next_command<W>(writes: &mut Option<mpsc::Receiver<W>>) -> W {
    loop {
        match writes {
            Some(rx) => match rx.recv().await {
                Some(command) => return command,
                None => *writes = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}

/// Opens the network, connects to the device and reads every point once, for tools and
/// benchmarks: the samples and how long the read took (connecting excluded).
pub async fn scan_once(
    spec: &DeviceSpec,
    network: &Network,
) -> Result<(Vec<Sample>, Duration), BacnetError> {
    #[derive(Clone)]
    struct Discard;
    impl DriverOutput for Discard {
        async fn samples(&self, _: Vec<Sample>) {}
        fn status(&self, _: &str, _: DeviceStatus) {}
    }
    let Connection::Bacnet(link) = spec.connection.clone() else {
        return Err(BacnetError::Request(format!(
            "{} is not a BACnet device",
            spec.id
        )));
    };
    let points = points_of(spec);
    let device = Device {
        process_id: network.process_id(),
        cov_lifetime: spec.profile.bacnet.cov_lifetime_s,
        guard: network.apdu_timeout() * 4 + Duration::from_secs(2),
        link,
        network: network.clone(),
        out: Discard,
        by_object: HashMap::new(),
        points,
        spec: spec.clone(),
    };
    let mut s = device
        .connect()
        .await
        .map_err(|r| BacnetError::Request(r.to_string()))?;
    let all: Vec<usize> = (0..device.points.len()).collect();
    let started = Instant::now();
    let (samples, failure) = device.read(&mut s, &all, now_micros()).await;
    let took = started.elapsed();
    match failure {
        Some(reason) => Err(BacnetError::Request(reason.to_string())),
        None => Ok((samples, took)),
    }
}
