//! `smartpark bench billing`: a park's month closed from meters to money, on SQLite and on
//! PostgreSQL in the same run.
//!
//! The park: 1,000 enterprises, 3,000 rooms of 100 m² in 10 buildings, one active contract
//! per enterprise (three rooms each, rent per m², a property fee, electricity on a
//! time-of-use tariff and water), and 5,000 sub-meters (every room's electricity meter and
//! 2,000 rooms' water meters) with October's 15-minute counter rollups (2,976 buckets each,
//! 14.9 million rows) uploaded as edges upload them. Contracts, tariffs' versions and the
//! meters' mappings are written into the hub's tables directly (the fixture); everything
//! measured goes through the hub's API:
//!
//! - `bill_run_s`: November's run (November's rent and fees in advance, October's rent
//!   caught up and October's electricity and water in arrears, priced per quarter hour),
//!   then `bill_run_again_s` and `bill_run_again_lines` (a second run of the month, which
//!   must bill nothing).
//! - `reconcile_100k_payments_s`: a bank statement of 100,000 credits (every issued bill
//!   paid in 100 transfers naming it) imported and matched, and the day's reconciliation,
//!   apart as `bank_import_100k_s` and `reconciliation_day_s`.
//!
//! The anchors, in the same database: every rollup row read by one plain query
//! (`anchor_rollup_scan_s`) and 100,000 payment-sized rows inserted in one transaction
//! (`anchor_insert_100k_s`). PostgreSQL is the server `SMARTPARK_BENCH_PG_URL` names, or
//! this machine's (127.0.0.1:5432, user postgres), in a schema made for the run and dropped
//! after it.

use std::time::{Duration, Instant};

use accounts::audit::Mirror;
use accounts::auth::{Source, manage};
use park_model::ParkDirectory;
use park_model::billing::contract::{
    CommonShare, Cycle, EnergyClause, LateFee, LeasedSpace, Rate, Terms,
};
use park_model::billing::period::Days;
use park_model::directory::{
    Enterprise, EnterpriseKind, EnterpriseStatus, Space, SpaceKind, SpaceState,
};
use park_model::identity::password::Cost;
use park_model::identity::{Grant, PermissionSet, Role, Scope};
use park_model::time::{local_timestamp, parse_date};
use serde_json::{Value, json};

const PARK: &str = "bench-park";
const ENTERPRISES: usize = 1_000;
const BUILDINGS: usize = 10;
const SPACES_PER_ENTERPRISE: usize = 3;
const WATER_METERS: usize = 2_000;
const OFFSET_MINUTES: i32 = 480;
const CREDITS_PER_BILL: i64 = 100;

pub async fn run() -> anyhow::Result<()> {
    let server = std::env::var("SMARTPARK_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    for store in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir()?;
        let mut settings = cloud_hub::HubSettings::for_dir(dir.path());
        let schema = format!("bench_billing_{}", std::process::id());
        if store == "postgres" {
            let admin = park_db::Handle::open(
                &park_db::Target::Postgres(server.clone()),
                park_db::pool::Access::ReadWrite,
            )?;
            admin.conn().execute_batch(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))?;
            let sep = if server.contains('?') { '&' } else { '?' };
            settings.database = park_db::Target::Postgres(format!(
                "{server}{sep}options=-c%20search_path%3D{schema}"
            ));
        }
        let result = one_store(store, dir.path(), settings).await;
        if store == "postgres" {
            let admin = park_db::Handle::open(
                &park_db::Target::Postgres(server.clone()),
                park_db::pool::Access::ReadWrite,
            )?;
            let _ = admin
                .conn()
                .execute_batch(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
        result?;
    }
    Ok(())
}

fn space_id(i: usize) -> String {
    format!("r{i:04}")
}

fn building_of(space: usize) -> String {
    format!(
        "b{}",
        space * BUILDINGS / (ENTERPRISES * SPACES_PER_ENTERPRISE)
    )
}

fn seed_directory(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut d = ParkDirectory::new(PARK, OFFSET_MINUTES, 1)?;
    for e in 0..ENTERPRISES {
        d.upsert(&Enterprise {
            id: format!("e{e:04}"),
            name: format!("企业{e:04}有限公司"),
            status: EnterpriseStatus::Active,
            kind: EnterpriseKind::Tenant,
        })?;
    }
    for s in 0..ENTERPRISES * SPACES_PER_ENTERPRISE {
        d.upsert(&Space {
            id: space_id(s),
            building_id: building_of(s),
            floor: (s % 300 / 30) as i32 + 1,
            area_m2: 100.0,
            name: space_id(s),
            kind: SpaceKind::Room,
            state: SpaceState::Leased,
        })?;
    }
    d.commit("bench seed", 1);
    std::fs::create_dir_all(dir.join("seed").join(PARK))?;
    std::fs::write(
        dir.join("seed").join(PARK).join("directory.automerge"),
        d.save(),
    )?;
    Ok(())
}

fn token(db: &park_db::Target, username: &str, grants: &[Grant]) -> anyhow::Result<String> {
    let handle = cloud_hub::store::open_db(db)?;
    let c = handle.conn();
    let actor = manage::host_actor("bench billing");
    manage::create(
        &c,
        &actor,
        Mirror::None,
        Source::Hub,
        manage::NewAccount {
            username,
            display_name: username,
            verifier: manage::verifier_for(username, "bench-ledger-river-42", Cost::TEST)?,
            grants,
            department: None,
        },
    )?;
    let held = grants
        .iter()
        .fold(PermissionSet::EMPTY, |a, g| a.union(g.role.permissions()));
    manage::create_token(&c, &actor, Mirror::None, username, "bench", held, 1)
}

fn day(text: &str) -> i32 {
    parse_date(text).expect("a date")
}

/// The contracts, tariffs and meters, straight into the hub's tables.
fn fixture(db: &park_db::Target) -> anyhow::Result<()> {
    let handle = cloud_hub::store::open_db(db)?;
    let c = handle.conn();
    let tx = c.transaction()?;
    let now = cloud_hub::store::now_micros();
    for e in 0..ENTERPRISES {
        let terms = Terms {
            enterprise_id: format!("e{e:04}"),
            spaces: (0..SPACES_PER_ENTERPRISE)
                .map(|k| LeasedSpace {
                    space_id: space_id(e * SPACES_PER_ENTERPRISE + k),
                    area_centi_m2: 10_000,
                })
                .collect(),
            term: Days::new(day("2026-10-01"), day("2029-10-01")),
            rent: Rate::PerM2Month {
                fen: 8_000 + (e as i64 % 7) * 100,
            },
            free_rent: Vec::new(),
            escalation_bp: 300,
            property_fee: Rate::PerM2Month { fen: 1_200 },
            deposit_fen: 0,
            cycle: Cycle::Monthly,
            due_days: 15,
            late_fee: LateFee {
                bp_per_day: 5,
                grace_days: 10,
            },
            energy: EnergyClause {
                electricity_tariff: Some("power".into()),
                water_tariff: Some("water".into()),
                common_share: CommonShare::None,
            },
            currency: "CNY".into(),
        };
        terms.validate()?;
        tx.execute(
            "INSERT INTO contracts (park, id, enterprise_id, state, terms, submitted_by, approved_by, created, created_by, updated, updated_by)
             VALUES (?1, ?2, ?3, 'active', ?4, 'bench', 'bench-reviewer', ?5, 'bench', ?5, 'bench')",
            park_db::params![PARK, format!("k{e:04}"), terms.enterprise_id, serde_json::to_string(&terms)?, now],
        )?;
    }
    let spaces = ENTERPRISES * SPACES_PER_ENTERPRISE;
    for s in 0..spaces {
        for (utility, unit, included) in [
            ("electricity", "kwh", true),
            ("water", "m3", s < WATER_METERS),
        ] {
            if included {
                tx.execute(
                    "INSERT INTO meters (park, id, building, point, utility, space_id, from_day, to_day, updated, updated_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, 'bench')",
                    park_db::params![
                        PARK,
                        format!("m-{unit}-{s:04}"),
                        building_of(s),
                        format!("{}/{unit}", space_id(s)),
                        utility,
                        space_id(s),
                        day("2026-01-01"),
                        now
                    ],
                )?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// October's 15-minute rollups of every meter, uploaded building by building as the
/// buildings' edges upload them; the number of rows.
async fn upload_rollups(h: &cloud_hub::Hub) -> anyhow::Result<usize> {
    use sync_protocol::{EdgeIdentity, HubSink, Record, RollupBatch, RollupRow, UploadStream};
    let from = local_timestamp("2026-10-01", 0, 0, OFFSET_MINUTES).expect("a date");
    let to = local_timestamp("2026-11-01", 0, 0, OFFSET_MINUTES).expect("a date");
    let spaces = ENTERPRISES * SPACES_PER_ENTERPRISE;
    let mut total = 0;
    for b in 0..BUILDINGS {
        let building = format!("b{b}");
        let edge = EdgeIdentity {
            edge_id: format!("e-{building}"),
            park: PARK.into(),
            building: building.clone(),
        };
        let mut points = Vec::new();
        for s in (0..spaces).filter(|s| building_of(*s) == building) {
            points.push((format!("{}/kwh", space_id(s)), 0.5 + (s % 5) as f64 * 0.25));
            if s < WATER_METERS {
                points.push((format!("{}/m3", space_id(s)), 0.01));
            }
        }
        let mut sink = h
            .store
            .sink(cloud_hub::store::BuildingKey::new(PARK, &building));
        let mut seq = 0u64;
        let mut batches: Vec<Vec<RollupRow>> = Vec::new();
        let mut batch = Vec::with_capacity(5_000);
        for (point, per_bucket) in &points {
            let mut reading = 1_000.0;
            let mut bucket = from;
            while bucket < to {
                reading += per_bucket;
                batch.push(RollupRow {
                    point: point.clone(),
                    period_s: 900,
                    bucket,
                    count: 15,
                    bad: 0,
                    min: reading - per_bucket,
                    max: reading,
                    sum: reading * 15.0,
                    last: reading,
                    last_ts: bucket + 899_000_000,
                    delta: *per_bucket,
                });
                total += 1;
                if batch.len() == 5_000 {
                    batches.push(std::mem::take(&mut batch));
                }
                bucket += 900_000_000;
            }
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        for rows in batches {
            seq += 1;
            let b = RollupBatch { rows };
            // The store takes uploads as fast as it commits them: a busy sink is waited
            // for, as an edge's session waits.
            while sink
                .accept(&edge, UploadStream::Rollups, seq, Record::Rollups(&b))
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        h.store.flush().await;
    }
    Ok(total)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

fn call(
    api: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{api}{path}"))
        .header("Authorization", format!("Bearer {token}"));
    let mut res = match body {
        Some(b) => agent().run(
            req.header("Content-Type", "application/json")
                .body(b.to_string())?,
        )?,
        None => agent().run(req.body(())?)?,
    };
    let status = res.status().as_u16();
    let text = res
        .body_mut()
        .with_config()
        .limit(512 * 1024 * 1024)
        .read_to_string()?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status != 200 {
        anyhow::bail!("{method} {path}: {status} {v}");
    }
    Ok(v)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

async fn one_store(
    store: &str,
    dir: &std::path::Path,
    mut settings: cloud_hub::HubSettings,
) -> anyhow::Result<()> {
    eprintln!("{store}: seeding the park");
    seed_directory(dir)?;
    settings.documents_seed_dir = Some(dir.join("seed"));
    let db = settings.database.clone();
    // The schema first, then the fixture, then the hub over it.
    drop(cloud_hub::store::open_db(&db)?);
    fixture(&db)?;
    let finance = token(
        &db,
        "bench-finance",
        &[Grant::new(Role::Finance, Scope::park(PARK))?],
    )?;
    let h = cloud_hub::Hub::start(settings).await?;
    h.auth.reload().await?;
    let api = h.api_addr;
    let span = |m: u16, band: &str| json!({"start_minute": m, "band": band});
    let power = json!({"name": "工商业电价", "utility": "electricity", "versions": [{
        "valid_from": "2026-01-01",
        "seasons": [{"months": [1,2,3,4,5,6,7,8,9,10,11,12],
            "workday": [span(0, "valley"), span(480, "peak"), span(720, "flat"), span(1020, "peak"), span(1260, "flat"), span(1380, "valley")],
            "non_workday": [span(0, "valley"), span(480, "flat"), span(1380, "valley")]}],
        "prices_e4": {"valley": 3012, "flat": 6532, "peak": 11104}}]});
    let water = json!({"name": "非居民用水", "utility": "water", "versions": [{
        "valid_from": "2026-01-01",
        "seasons": [{"months": [1,2,3,4,5,6,7,8,9,10,11,12], "workday": [span(0, "flat")], "non_workday": [span(0, "flat")]}],
        "prices_e4": {"flat": 59000}}]});
    let t2 = finance.clone();
    blocking(move || {
        call(
            api,
            &t2,
            "PUT",
            &format!("/api/v1/parks/{PARK}/utility-tariffs/power"),
            Some(power),
        )?;
        call(
            api,
            &t2,
            "PUT",
            &format!("/api/v1/parks/{PARK}/utility-tariffs/water"),
            Some(water),
        )?;
        Ok(())
    })
    .await?;
    eprintln!("{store}: uploading October's rollups of 5,000 meters");
    let started = Instant::now();
    let rows = upload_rollups(&h).await?;
    eprintln!(
        "{store}: {rows} rollup rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The run, and the run again.
    let t2 = finance.clone();
    let (first, again, first_s, again_s) = blocking(move || {
        let run = |t: &str| {
            call(
                api,
                t,
                "POST",
                &format!("/api/v1/parks/{PARK}/bill-runs"),
                Some(json!({"month": "2026-11"})),
            )
        };
        let started = Instant::now();
        let first = run(&t2)?;
        let first_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let again = run(&t2)?;
        Ok((first, again, first_s, started.elapsed().as_secs_f64()))
    })
    .await?;
    let bills: Vec<String> = first["bills"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    println!("bill_run_s_{store}: {first_s:.2} s");
    println!("bill_run_bills_{store}: {} bills", bills.len());
    println!("bill_run_lines_{store}: {} lines", first["lines"]);
    println!(
        "bill_run_pending_{store}: {} charges",
        first["pending"].as_array().map_or(0, Vec::len)
    );
    println!("bill_run_again_s_{store}: {again_s:.2} s");
    println!("bill_run_again_lines_{store}: {} lines", again["lines"]);

    // Every bill issued, then paid in 100 transfers each on one statement.
    let t2 = finance.clone();
    let (statement, credits) = blocking(move || {
        let mut csv = String::from("交易日期,交易流水号,对方户名,对方账号,贷方金额,摘要\n");
        let mut n = 0usize;
        for id in &bills {
            let b = call(
                api,
                &t2,
                "POST",
                &format!("/api/v1/parks/{PARK}/bills/{id}/issue"),
                Some(json!({"date": "2026-11-03"})),
            )?;
            let total = b["total_fen"].as_i64().unwrap_or(0);
            let part = total / CREDITS_PER_BILL;
            for k in 0..CREDITS_PER_BILL {
                let amount = if k == CREDITS_PER_BILL - 1 {
                    total - part * (CREDITS_PER_BILL - 1)
                } else {
                    part
                };
                n += 1;
                csv.push_str(&format!(
                    "2026-11-10,BK{n:08},{},62220202{n:011},{}.{:02},{id} 分期\n",
                    b["enterprise_id"].as_str().unwrap_or(""),
                    amount / 100,
                    amount % 100
                ));
            }
        }
        Ok((csv, n))
    })
    .await?;
    let t2 = finance.clone();
    let (import, report, import_s, report_s) = blocking(move || {
        let started = Instant::now();
        let import = call(
            api,
            &t2,
            "POST",
            &format!("/api/v1/parks/{PARK}/bank-statements"),
            Some(json!({"csv": statement, "name": "bench.csv"})),
        )?;
        let import_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let report = call(
            api,
            &t2,
            "GET",
            &format!("/api/v1/parks/{PARK}/reconciliation?date=2026-11-10"),
            None,
        )?;
        Ok((import, report, import_s, started.elapsed().as_secs_f64()))
    })
    .await?;
    println!(
        "bank_import_100k_s_{store}: {import_s:.2} s ({credits} credits, {} matched)",
        import["matched"]
    );
    println!("reconciliation_day_s_{store}: {report_s:.2} s");
    println!(
        "reconcile_100k_payments_s_{store}: {:.2} s",
        import_s + report_s
    );
    println!(
        "reconciliation_{store}: received {} fen, receivable {} fen, balanced {}",
        report["received_fen"], report["receivable_fen"], report["balanced"]
    );

    // The anchors, in the same database.
    let db2 = db.clone();
    let (scan_s, scanned, insert_s) = blocking(move || {
        let handle = park_db::Handle::open(&db2, park_db::pool::Access::ReadWrite)?;
        let c = handle.conn();
        let started = Instant::now();
        let mut scanned = 0usize;
        let mut sum = 0f64;
        for (bucket, delta) in c.query_all(
            "SELECT bucket, delta FROM rollups WHERE period = 900",
            park_db::params![],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<f64>>(1)?)),
        )? {
            scanned += 1;
            sum += delta.unwrap_or(0.0) + (bucket % 2) as f64;
        }
        std::hint::black_box(sum);
        let scan_s = started.elapsed().as_secs_f64();
        c.execute_batch("CREATE TABLE anchor_payments (park TEXT NOT NULL, id TEXT NOT NULL, bill_id TEXT NOT NULL, amount_fen BIGINT NOT NULL, reference TEXT NOT NULL, day BIGINT NOT NULL, PRIMARY KEY (park, id))")?;
        let started = Instant::now();
        let tx = c.transaction()?;
        for chunk in (0..100_000).collect::<Vec<i64>>().chunks(100) {
            let mut sql = String::from("INSERT INTO anchor_payments (park, id, bill_id, amount_fen, reference, day) VALUES ");
            let mut values = Vec::new();
            for (i, n) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                let b = i * 6;
                sql.push_str(&format!("(?{},?{},?{},?{},?{},?{})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6));
                values.extend([
                    park_db::Value::Text(PARK.into()),
                    park_db::Value::Text(format!("a{n}")),
                    park_db::Value::Text(format!("bill{}", n / 100)),
                    park_db::Value::Integer(12_345),
                    park_db::Value::Text(format!("BK{n:08}")),
                    park_db::Value::Integer(20_402),
                ]);
            }
            tx.execute(&sql, park_db::params_from_iter(values))?;
        }
        tx.commit()?;
        Ok((scan_s, scanned, started.elapsed().as_secs_f64()))
    })
    .await?;
    println!("anchor_rollup_scan_s_{store}: {scan_s:.2} s ({scanned} rows)");
    println!("anchor_insert_100k_s_{store}: {insert_s:.2} s");
    h.shutdown().await;
    Ok(())
}
