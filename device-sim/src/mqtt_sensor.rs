//! [`MqttSensorSim`]: an environment sensor that publishes Tasmota-style telemetry to an MQTT
//! broker (MQTT 3.1.1, plain TCP), and reconnects for as long as it runs.
//!
//! Topics, as Tasmota uses them: `tele/<topic_id>/SENSOR` every interval (QoS 0, not
//! retained), and `tele/<topic_id>/LWT`: `Online` retained at every connect, `Offline` retained
//! as the last will. It does not subscribe to commands (`cmnd/...`) and does not speak TLS.

use std::time::Duration;

use anyhow::ensure;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::clock::{seconds_of_day, unix_now_s};
use crate::environment::{EnvironmentState, tasmota_sensor_payload};

const ONLINE: &str = "Online";
const OFFLINE: &str = "Offline";
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// A simulated Tasmota environment sensor, configured and ready to [`run`](MqttSensorSim::run).
#[derive(Clone, Debug)]
pub struct MqttSensorSim {
    host: String,
    port: u16,
    topic_id: String,
    interval: Duration,
    seed: u64,
    utc_offset_s: i32,
    password: Option<String>,
}

impl MqttSensorSim {
    pub fn new(host: &str, port: u16, topic_id: &str, interval: Duration, seed: u64) -> Self {
        MqttSensorSim {
            host: host.to_owned(),
            port,
            topic_id: topic_id.to_owned(),
            interval,
            seed,
            utc_offset_s: 0,
            password: None,
        }
    }

    /// Logs in to the broker as `sim_TOPIC_ID` with this password.
    pub fn with_password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// The broker username the sensor logs in with.
    pub fn username(&self) -> String {
        format!("sim_{}", self.topic_id)
    }

    /// Shifts the `Time` field and the daily temperature pattern to local time.
    pub fn utc_offset_s(mut self, utc_offset_s: i32) -> Self {
        self.utc_offset_s = utc_offset_s;
        self
    }

    pub fn sensor_topic(&self) -> String {
        format!("tele/{}/SENSOR", self.topic_id)
    }

    pub fn status_topic(&self) -> String {
        format!("tele/{}/LWT", self.topic_id)
    }

    /// Connects and publishes until the task is dropped. Returns early only for a bad
    /// configuration; a broker that is away is retried, with telemetry skipped meanwhile.
    pub async fn run(self) -> anyhow::Result<()> {
        ensure!(
            !self.topic_id.is_empty() && !self.topic_id.contains(['/', '+', '#']),
            "topic id {:?} must be one topic level without wildcards",
            self.topic_id
        );
        ensure!(
            !self.interval.is_zero(),
            "the publish interval must not be zero"
        );
        let span = info_span!("mqtt_sensor", topic_id = %self.topic_id);
        self.publish_forever().instrument(span).await
    }

    async fn publish_forever(self) -> anyhow::Result<()> {
        let mut options = MqttOptions::new(self.username(), &self.host, self.port);
        if let Some(p) = &self.password {
            options.set_credentials(self.username(), p);
        }
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_last_will(LastWill::new(
                self.status_topic(),
                OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        // A small queue: while the broker is away, samples are dropped rather than hoarded.
        let (client, mut events) = AsyncClient::new(options, 16);

        let mut sensor = EnvironmentState::new(self.seed, self.local_seconds_of_day());
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = tokio::time::Instant::now();
        let mut connected = false;
        let mut reconnect_delay = Duration::from_millis(200);

        loop {
            tokio::select! {
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        info!(host = %self.host, port = self.port, "Connected to the MQTT broker.");
                        connected = true;
                        reconnect_delay = Duration::from_millis(200);
                        if let Err(error) = client.try_publish(self.status_topic(), QoS::AtLeastOnce, true, ONLINE) {
                            warn!(%error, "Cannot queue the online status.");
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        if connected {
                            warn!(%error, "Lost the MQTT broker; reconnecting.");
                        } else {
                            debug!(%error, ?reconnect_delay, "MQTT broker not reachable; retrying.");
                        }
                        connected = false;
                        // Polling again reconnects; the pause keeps a dead broker from being hammered.
                        tokio::time::sleep(reconnect_delay).await;
                        reconnect_delay = (reconnect_delay * 2).min(MAX_RECONNECT_DELAY);
                    }
                },
                _ = ticks.tick() => {
                    let now = tokio::time::Instant::now();
                    sensor.advance(self.local_seconds_of_day(), now - last_tick);
                    last_tick = now;
                    if !connected {
                        continue;
                    }
                    let local_unix_s = unix_now_s().floor() as i64 + i64::from(self.utc_offset_s);
                    let payload = tasmota_sensor_payload(local_unix_s, &sensor.reading());
                    if let Err(error) = client.try_publish(self.sensor_topic(), QoS::AtMostOnce, false, payload) {
                        debug!(%error, "Telemetry dropped: the MQTT queue is full.");
                    }
                }
            }
        }
    }

    fn local_seconds_of_day(&self) -> f64 {
        seconds_of_day(unix_now_s(), self.utc_offset_s)
    }
}

/// Runs a simulated Tasmota AM2301 sensor against the broker at `host:port`, publishing every
/// `interval`; see [`MqttSensorSim`].
pub async fn run_mqtt_sensor(
    host: &str,
    port: u16,
    topic_id: &str,
    interval: Duration,
    seed: u64,
) -> anyhow::Result<()> {
    MqttSensorSim::new(host, port, topic_id, interval, seed)
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_tasmota_conventions() {
        let sim = MqttSensorSim::new("localhost", 1883, "env-b1-2f", Duration::from_secs(10), 1);
        assert_eq!(sim.sensor_topic(), "tele/env-b1-2f/SENSOR");
        assert_eq!(sim.status_topic(), "tele/env-b1-2f/LWT");
    }

    #[tokio::test]
    async fn a_topic_id_with_a_wildcard_or_a_slash_is_refused_before_connecting() {
        for bad in ["a/b", "a+", "#", ""] {
            let result = run_mqtt_sensor("127.0.0.1", 9, bad, Duration::from_secs(1), 1).await;
            assert!(result.is_err(), "{bad:?} was accepted");
        }
    }
}
