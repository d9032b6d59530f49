//! The hub's storage on whichever engine the test run uses (SQLite, or PostgreSQL when
//! `SMARTPARK_TEST_PG_URL` is set): versioned migrations checked at start, and a value of
//! every kind read back as it was stored.

mod common;

use cloud_hub::Hub;
use cloud_hub::store::{HubStore, MIGRATIONS, open_db};
use park_db::params;
use sync_protocol::{
    EdgeIdentity, HubSink, Quality, RawBatch, RawSample, RawSeries, Record, UploadStream, Value,
};

#[tokio::test]
async fn a_new_database_gets_every_migration_once_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let settings = common::settings(dir.path());
    let hub = Hub::start(settings.clone()).await.unwrap();
    let applied: Vec<(i64, String)> = hub
        .store
        .read(|c| {
            c.query_all(
                "SELECT version, name FROM schema_migrations WHERE component = 'hub' ORDER BY version",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
        .unwrap();
    let known: Vec<(i64, String)> = MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_string()))
        .collect();
    assert_eq!(applied, known);
    hub.shutdown().await;

    // Started again, nothing is applied twice.
    let hub = Hub::start(settings.clone()).await.unwrap();
    let count: i64 = hub
        .store
        .read(|c| c.query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(count, MIGRATIONS.len() as i64);
    hub.shutdown().await;

    // A database a newer build has migrated is not written by this one.
    {
        let handle = open_db(&settings.database).unwrap();
        handle
            .conn()
            .execute(
                "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES ('hub', ?1, 'from the future', 0)",
                params![MIGRATIONS.last().unwrap().version + 1],
            )
            .unwrap();
    }
    let err = match Hub::start(settings).await {
        Ok(_) => panic!("a hub started on a database newer than its build"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("run a newer build"), "{err}");
}

#[tokio::test]
async fn samples_of_every_kind_read_back_as_they_were_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let settings = common::settings(dir.path());
    let store = HubStore::open(&settings.database, Default::default()).unwrap();
    let edge = EdgeIdentity {
        edge_id: "e".into(),
        park: "p".into(),
        building: "b".into(),
    };
    let values = [
        Some(Value::Bool(true)),
        Some(Value::Int(-9_007_199_254_740_993)),
        Some(Value::Float(0.1 + 0.2)),
        Some(Value::Float(-1.0e-300)),
        Some(Value::Text("温度 'ok'".into())),
        None,
    ];
    let batch = RawBatch {
        series: vec![RawSeries {
            point: "m/p".into(),
            samples: values
                .iter()
                .enumerate()
                .map(|(i, v)| RawSample {
                    ts: i as i64,
                    value: v.clone(),
                    quality: if v.is_some() {
                        Quality::Good
                    } else {
                        Quality::Bad("no reply".into())
                    },
                })
                .collect(),
        }],
    };
    let mut sink = store.sink(cloud_hub::store::BuildingKey::new("p", "b"));
    sink.accept(&edge, UploadStream::Raw, 1, Record::Raw(&batch))
        .unwrap();
    store.flush().await;
    let read: Vec<serde_json::Value> = store
        .read(|c| {
            c.query_all(
                "SELECT ts, value, q, reason FROM raw ORDER BY ts",
                [],
                |r| {
                    Ok(cloud_hub::store::sample_json(
                        r.get(0)?,
                        r.get_ref(1)?,
                        r.get(2)?,
                        r.get(3)?,
                    ))
                },
            )
        })
        .await
        .unwrap();
    let values: Vec<&serde_json::Value> = read.iter().map(|s| &s["value"]).collect();
    assert_eq!(
        values,
        [
            &serde_json::json!(true),
            &serde_json::json!(-9_007_199_254_740_993i64),
            &serde_json::json!(0.1 + 0.2),
            &serde_json::json!(-1.0e-300),
            &serde_json::json!("温度 'ok'"),
            &serde_json::Value::Null,
        ]
    );
    assert_eq!(read[5]["quality"], "bad");
    assert_eq!(read[5]["reason"], "no reply");
    assert_eq!(
        store.durable(
            &cloud_hub::store::BuildingKey::new("p", "b"),
            UploadStream::Raw
        ),
        1
    );
}
