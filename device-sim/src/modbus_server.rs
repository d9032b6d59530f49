//! [`EnergyMeterSim`]: a Modbus TCP server that looks like an Eastron SDM630 on a building's
//! main feed, its values following the wall clock's time of day.
//!
//! It serves whatever listener it is given and never binds a port itself, so tests use
//! `127.0.0.1:0`. It answers every unit id the same way (one meter per listener); RTU is not
//! served here (`tests/hil/peers/modbus_device.py` covers serial lines).

use std::future::{Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};
use tracing::{debug, info, warn};

use crate::clock::{seconds_of_day, unix_now_s};
use crate::meter::MeterState;
use crate::sdm630::Sdm630;

/// A simulated SDM630 energy meter, configured and ready to [`serve`](EnergyMeterSim::serve).
#[derive(Clone, Debug)]
pub struct EnergyMeterSim {
    seed: u64,
    peak_kw: f64,
    utc_offset_s: i32,
    tick: Duration,
}

impl EnergyMeterSim {
    /// A meter with a 45 kW peak (within the 100 A of a direct-connected SDM630), following
    /// UTC, updated every second.
    pub fn new(seed: u64) -> Self {
        EnergyMeterSim {
            seed,
            peak_kw: 45.0,
            utc_offset_s: 0,
            tick: Duration::from_secs(1),
        }
    }

    /// The load at the daily peak (about 13:00), in kW.
    pub fn peak_kw(mut self, peak_kw: f64) -> Self {
        self.peak_kw = peak_kw;
        self
    }

    /// Shifts the daily curve to local time, for example `8 * 3600` for China Standard Time.
    pub fn utc_offset_s(mut self, utc_offset_s: i32) -> Self {
        self.utc_offset_s = utc_offset_s;
        self
    }

    /// How often the values change (a real SDM630 updates about once a second).
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(10));
        self
    }

    /// Serves Modbus TCP on `listener` until accepting a connection fails. Every connection
    /// sees the same meter.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// println!("meter on {}", listener.local_addr()?);
    /// device_sim::EnergyMeterSim::new(7).peak_kw(120.0).utc_offset_s(8 * 3600).serve(listener).await
    /// # }
    /// ```
    pub async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        let local = listener
            .local_addr()
            .context("the listener has no local address")?;
        let start = seconds_of_day(unix_now_s(), self.utc_offset_s);
        let device = Arc::new(Mutex::new(Sdm630::new(MeterState::new(
            self.seed,
            start,
            self.peak_kw,
        ))));
        info!(%local, seed = self.seed, peak_kw = self.peak_kw, "Energy meter simulator listening.");

        let on_connected = |stream: TcpStream, peer: SocketAddr| {
            let device = Arc::clone(&device);
            async move {
                info!(%local, %peer, "Modbus client connected.");
                accept_tcp_connection(stream, peer, |peer| {
                    Ok(Some(MeterService {
                        device: Arc::clone(&device),
                        peer,
                    }))
                })
            }
        };
        let on_process_error = move |error: io::Error| {
            warn!(%local, %error, "Modbus connection ended with an error.");
        };
        let server = Server::new(listener);
        tokio::select! {
            result = server.serve(&on_connected, on_process_error) => {
                result.context("the Modbus TCP server stopped accepting connections")
            }
            never = run_clock(Arc::clone(&device), self.tick) => match never {},
        }
    }
}

/// Serves a simulated SDM630 with default settings on `listener`; see [`EnergyMeterSim`].
pub async fn serve_energy_meter(listener: TcpListener, seed: u64) -> anyhow::Result<()> {
    EnergyMeterSim::new(seed).serve(listener).await
}

/// Advances the meter by the time that really passed, every `tick`, for ever.
async fn run_clock(device: Arc<Mutex<Sdm630>>, tick: Duration) -> std::convert::Infallible {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        interval.tick().await;
        let now = tokio::time::Instant::now();
        lock(&device).meter.advance(now - last);
        last = now;
    }
}

/// A poisoned lock only means a panic elsewhere mid-update; the meter's numbers are still
/// numbers, so the simulator keeps serving them.
fn lock(device: &Mutex<Sdm630>) -> std::sync::MutexGuard<'_, Sdm630> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct MeterService {
    device: Arc<Mutex<Sdm630>>,
    peer: SocketAddr,
}

impl tokio_modbus::server::Service for MeterService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Request<'static>) -> Self::Future {
        let result = lock(&self.device).handle_request(&request);
        if let Err(exception) = &result {
            debug!(peer = %self.peer, ?request, ?exception, "Answered with an exception.");
        }
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use tokio_modbus::client::{Context, Reader as _, Writer as _};
    use tokio_modbus::prelude::tcp;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn start_meter(seed: u64) -> Context {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve_energy_meter(listener, seed));
        tokio::time::timeout(TIMEOUT, tcp::connect(address))
            .await
            .unwrap()
            .unwrap()
    }

    fn floats(words: &[u16]) -> Vec<f32> {
        words
            .chunks(2)
            .map(|w| f32::from_bits(u32::from(w[0]) << 16 | u32::from(w[1])))
            .collect()
    }

    #[tokio::test]
    async fn a_modbus_client_reads_plausible_voltages_and_frequency() {
        let mut client = start_meter(1).await;
        let words = tokio::time::timeout(TIMEOUT, client.read_input_registers(0x0000, 80))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let values = floats(&words);
        for voltage in &values[0..3] {
            assert!(
                (225.0..=235.0).contains(voltage),
                "voltages {:?}",
                &values[0..3]
            );
        }
        let frequency = values[0x46 / 2];
        assert!((49.9..=50.1).contains(&frequency), "frequency {frequency}");
        let import_kwh = values[0x48 / 2];
        assert!(import_kwh >= 10_000.0, "import {import_kwh} kWh");
    }

    #[tokio::test]
    async fn an_unknown_address_is_answered_with_illegal_data_address() {
        let mut client = start_meter(2).await;
        let answer = tokio::time::timeout(TIMEOUT, client.read_input_registers(0x1000, 2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, Err(ExceptionCode::IllegalDataAddress));
        // The connection survives the exception.
        let total = tokio::time::timeout(TIMEOUT, client.read_input_registers(0x0156, 2))
            .await
            .unwrap()
            .unwrap();
        assert!(total.is_ok(), "{total:?}");
    }

    #[tokio::test]
    async fn the_demand_period_written_over_tcp_is_read_back() {
        let mut client = start_meter(3).await;
        let thirty = 30f32.to_bits();
        let words = [(thirty >> 16) as u16, thirty as u16];
        let written =
            tokio::time::timeout(TIMEOUT, client.write_multiple_registers(0x0002, &words))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(written, Ok(()));
        let read = tokio::time::timeout(TIMEOUT, client.read_holding_registers(0x0002, 2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, Ok(words.to_vec()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_task_moves_the_counters_as_time_passes() {
        let device = Arc::new(Mutex::new(Sdm630::new(MeterState::new(
            4,
            12.0 * 3600.0,
            100.0,
        ))));
        let before = lock(&device).meter.readings().import_kwh;
        let clock = tokio::spawn(run_clock(Arc::clone(&device), Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        clock.abort();
        let used = lock(&device).meter.readings().import_kwh - before;
        // About an hour at nearly 100 kW.
        assert!((80.0..=110.0).contains(&used), "used {used} kWh in an hour");
    }
}
