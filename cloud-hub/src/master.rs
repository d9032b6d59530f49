//! The park's master data, edited on the hub: enterprises, people and access groups in the
//! park's directory document, and the status of credentials. Every edit is checked (each
//! refusal names the field), made as one automerge change on the hub's editing copy of the
//! directory ([`Documents::edit_directory`]), committed to the store before it is answered,
//! audited, and synced to the park's edges, which decide their doors from it.
//!
//! Who made and changed each record, and when, is kept beside the document in
//! `master_meta` (the documents carry what the doors need, not their history).

use accounts::Caller;
use accounts::http::{ApiError, ApiResult, Routes, audit_outcome};
use accounts::openapi::{Doc, one_of};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use park_model::directory::{
    AccessGroup, Credential, CredentialStatus, Enterprise, EnterpriseKind, EnterpriseStatus,
    Person, PersonStatus,
};
use park_model::document::Entity;
use park_model::identity::Access;
use park_model::identity::Permission::{CredentialsEdit, MasterDataEdit, TelemetryRead};
use park_model::{DocError, ParkDirectory};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};

use crate::api::ApiState;
use crate::store::now_micros;

/// The routes of the park's master data.
pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::Allowed;
    let doc = Doc::new;
    r.get(
        "/api/v1/parks/{park}/enterprises",
        Allowed(TelemetryRead),
        list_enterprises,
    )
    .doc(
        doc("master data", "The park's enterprises, a page at a time")
            .query::<ListQuery>()
            .returns::<EnterprisePage>(),
    )
    .put(
        "/api/v1/parks/{park}/enterprises/{enterprise}",
        Allowed(MasterDataEdit),
        put_enterprise,
    )
    .doc(
        doc("master data", "Create or change an enterprise")
            .body::<EnterpriseBody>()
            .returns::<EnterpriseView>(),
    )
    .get(
        "/api/v1/parks/{park}/people",
        Allowed(TelemetryRead),
        list_people,
    )
    .doc(
        doc("master data", "The park's people, a page at a time")
            .query::<ListQuery>()
            .returns::<PersonPage>(),
    )
    .put(
        "/api/v1/parks/{park}/people/{person}",
        Allowed(MasterDataEdit),
        put_person,
    )
    .doc(
        doc("master data", "Create or change a person")
            .body::<PersonBody>()
            .returns::<PersonView>(),
    )
    .get(
        "/api/v1/parks/{park}/access-groups",
        Allowed(TelemetryRead),
        list_groups,
    )
    .doc(
        doc("master data", "The park's access groups, a page at a time")
            .query::<ListQuery>()
            .returns::<AccessGroupPage>(),
    )
    .put(
        "/api/v1/parks/{park}/access-groups/{group}",
        Allowed(MasterDataEdit),
        put_group,
    )
    .doc(
        doc("master data", "Create or change an access group")
            .body::<AccessGroupBody>()
            .returns::<AccessGroupView>(),
    )
    .get(
        "/api/v1/parks/{park}/credentials",
        Allowed(CredentialsEdit),
        list_credentials,
    )
    .doc(
        doc(
            "master data",
            "The park's credentials, masked, a page at a time",
        )
        .query::<ListQuery>()
        .returns::<CredentialPage>(),
    )
    .post(
        "/api/v1/parks/{park}/credentials/{credential}/status",
        Allowed(CredentialsEdit),
        credential_status,
    )
    .doc(
        doc(
            "master data",
            "Suspend, restore or report lost a credential",
        )
        .describe("Edges refuse a suspended or lost credential once they have synced the change.")
        .body::<CredentialStatusBody>()
        .returns::<CredentialView>(),
    )
}

// ---- what the API takes and gives ----

fn texts<T: Copy>(all: &[T], text: fn(T) -> &'static str) -> RefOr<Schema> {
    one_of(all.iter().map(|v| text(*v)))
}

fn enterprise_statuses() -> RefOr<Schema> {
    texts(EnterpriseStatus::ALL, EnterpriseStatus::as_str)
}

fn enterprise_kinds() -> RefOr<Schema> {
    texts(EnterpriseKind::ALL, EnterpriseKind::as_str)
}

fn person_statuses() -> RefOr<Schema> {
    texts(PersonStatus::ALL, PersonStatus::as_str)
}

fn credential_statuses() -> RefOr<Schema> {
    texts(CredentialStatus::ALL, CredentialStatus::as_str)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Records whose id or name contains this (case-insensitive).
    #[param(max_length = 128)]
    q: Option<String>,
    /// Only this enterprise's people (people), this person's credentials (credentials).
    #[param(max_length = 128)]
    of: Option<String>,
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// At most 500; 50 when left out.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// Who made a record and who changed it last, and when (microseconds since 1970); empty
/// for records that came from a seed file.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct RecordMeta {
    pub created_at: Option<i64>,
    pub created_by: Option<String>,
    pub updated_at: Option<i64>,
    pub updated_by: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseBody {
    #[schema(max_length = 200)]
    name: String,
    #[schema(schema_with = enterprise_statuses)]
    status: String,
    #[schema(schema_with = enterprise_kinds)]
    kind: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnterpriseView {
    pub id: String,
    pub name: String,
    #[schema(schema_with = enterprise_statuses)]
    pub status: String,
    #[schema(schema_with = enterprise_kinds)]
    pub kind: String,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnterprisePage {
    pub total: usize,
    pub offset: usize,
    pub enterprises: Vec<EnterpriseView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonBody {
    #[schema(max_length = 200)]
    name: String,
    #[schema(max_length = 128)]
    enterprise_id: String,
    #[schema(schema_with = person_statuses)]
    status: String,
    #[serde(default)]
    access_group_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PersonView {
    pub id: String,
    pub name: String,
    pub enterprise_id: String,
    #[schema(schema_with = person_statuses)]
    pub status: String,
    pub access_group_ids: Vec<String>,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PersonPage {
    pub total: usize,
    pub offset: usize,
    pub people: Vec<PersonView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessGroupBody {
    #[schema(max_length = 200)]
    name: String,
    #[serde(default)]
    door_ids: Vec<String>,
    schedule_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessGroupView {
    pub id: String,
    pub name: String,
    pub door_ids: Vec<String>,
    pub schedule_id: Option<String>,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessGroupPage {
    pub total: usize,
    pub offset: usize,
    pub access_groups: Vec<AccessGroupView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialStatusBody {
    #[schema(schema_with = credential_statuses)]
    status: String,
    /// Why: kept in the audit log.
    #[schema(max_length = 500)]
    reason: String,
}

/// A credential as people may see it: its kind and the last characters of a card or plate,
/// never its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    pub id: String,
    pub person_id: String,
    pub kind: String,
    pub masked: String,
    #[schema(schema_with = credential_statuses)]
    pub status: String,
    pub valid_from: Option<i64>,
    pub valid_to: Option<i64>,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialPage {
    pub total: usize,
    pub offset: usize,
    pub credentials: Vec<CredentialView>,
}

// ---- checks ----

/// A refused edit: 422 naming the field, or a document error.
#[derive(Debug)]
enum EditError {
    Field(String),
    NotFound(String),
    Doc(DocError),
}

impl From<DocError> for EditError {
    fn from(e: DocError) -> Self {
        EditError::Doc(e)
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::Field(m) => ApiError::invalid(m),
            EditError::NotFound(m) => ApiError::not_found(m),
            EditError::Doc(e) => ApiError::invalid(e.to_string()),
        }
    }
}

/// An id as the documents take them: 1 to 128 letters, digits, `-`, `_`, `.`.
fn check_id(field: &str, id: &str) -> Result<(), EditError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EditError::Field(format!(
            "{field}: {id:?} is not an id (1 to 128 letters, digits, '-', '_' or '.')"
        )))
    }
}

fn check_name(field: &str, name: &str) -> Result<String, EditError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(EditError::Field(format!(
            "{field}: must be 1 to 200 characters without control characters"
        )));
    }
    Ok(name.to_string())
}

fn parse<T: std::str::FromStr>(field: &str, value: &str, all: &[&str]) -> Result<T, EditError> {
    value.parse().map_err(|_| {
        EditError::Field(format!(
            "{field}: {value:?} is not one of {}",
            all.join(", ")
        ))
    })
}

fn exists<E: Entity<Schema = park_model::directory::DirectorySchema>>(
    d: &ParkDirectory,
    field: &str,
    id: &str,
    what: &str,
) -> Result<(), EditError> {
    match d.get::<E>(id)? {
        Some(_) => Ok(()),
        None => Err(EditError::Field(format!(
            "{field}: no {what} {id:?} in this park"
        ))),
    }
}

// ---- handlers ----

fn no_park(park: &str) -> ApiError {
    ApiError::not_found(format!("park {park} has no directory on this hub"))
}

fn page_args(q: &ListQuery) -> ApiResult<(String, usize, usize)> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    for (name, v) in [("q", &q.q), ("of", &q.of)] {
        if v.as_ref().is_some_and(|v| v.chars().count() > 128) {
            return Err(ApiError::bad_request(format!(
                "{name} takes at most 128 characters"
            )));
        }
    }
    Ok((
        q.q.as_deref().unwrap_or("").to_lowercase(),
        q.offset.unwrap_or(0),
        limit,
    ))
}

fn matches(needle: &str, id: &str, name: &str) -> bool {
    needle.is_empty() || id.to_lowercase().contains(needle) || name.to_lowercase().contains(needle)
}

/// The meta rows of `ids` in `collection`.
async fn metas(
    s: &ApiState,
    park: &str,
    collection: &'static str,
    ids: Vec<String>,
) -> ApiResult<std::collections::HashMap<String, RecordMeta>> {
    let park = park.to_string();
    s.store
        .read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT created_at, created_by, updated_at, updated_by FROM master_meta
                 WHERE park = ?1 AND collection = ?2 AND id = ?3",
            )?;
            let mut out = std::collections::HashMap::new();
            for id in ids {
                let meta = stmt
                    .query_row(params![park, collection, id], |r| {
                        Ok(RecordMeta {
                            created_at: r.get(0)?,
                            created_by: r.get(1)?,
                            updated_at: r.get(2)?,
                            updated_by: r.get(3)?,
                        })
                    })
                    .ok()
                    .unwrap_or_default();
                out.insert(id, meta);
            }
            Ok(out)
        })
        .await
        .map_err(ApiError::internal)
}

/// Reads a collection of the park's directory, filtered and paged.
async fn read_page<E, F>(
    s: &ApiState,
    park: &str,
    keep: F,
    offset: usize,
    limit: usize,
) -> ApiResult<(usize, Vec<E>)>
where
    E: Entity<Schema = park_model::directory::DirectorySchema> + Send + 'static,
    F: Fn(&E) -> bool + Send + 'static,
{
    let documents = s.documents.clone();
    let park2 = park.to_string();
    let read = tokio::task::spawn_blocking(move || {
        documents.read_directory(&park2, |d| {
            d.entities::<E>().map(|all| {
                let matching: Vec<E> = all.items.into_values().filter(|e| keep(e)).collect();
                let total = matching.len();
                (
                    total,
                    matching.into_iter().skip(offset).take(limit).collect(),
                )
            })
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?;
    match read {
        None => Err(no_park(park)),
        Some(r) => r.map_err(|e| ApiError::internal(e.into())),
    }
}

/// Makes an edit of the park's directory, records it in the audit chain and who made it,
/// and waits until all of it is stored.
async fn edit<T: Send + 'static>(
    s: &ApiState,
    caller: &Caller,
    audit: &accounts::Audit,
    park: &str,
    (collection, id): (&'static str, &str),
    message: String,
    f: impl FnOnce(&mut ParkDirectory) -> Result<T, EditError> + Send + 'static,
) -> ApiResult<T> {
    let (documents, store, park2) = (s.documents.clone(), s.store.clone(), park.to_string());
    let done =
        tokio::task::spawn_blocking(move || documents.edit_directory(&store, &park2, &message, f))
            .await
            .map_err(|e| ApiError::internal(e.into()))?;
    let out = match done {
        None => return Err(no_park(park)),
        Some(r) => r?,
    };
    s.auth
        .record(audit.clone())
        .await
        .map_err(ApiError::internal)?;
    let (p, i, by, now) = (
        park.to_string(),
        id.to_string(),
        caller.actor().name,
        now_micros(),
    );
    s.store.write_nowait(Box::new(move |c| {
        c.execute(
            "INSERT INTO master_meta (park, collection, id, created_at, created_by, updated_at, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?5)
             ON CONFLICT (park, collection, id) DO UPDATE SET updated_at = excluded.updated_at,
                 updated_by = excluded.updated_by",
            params![p, collection, i, now, by],
        )?;
        Ok(())
    }));
    s.store.flush().await;
    Ok(out)
}

async fn list_enterprises(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<EnterprisePage>> {
    let Query(q) = q?;
    let (needle, offset, limit) = page_args(&q)?;
    let (total, items) = read_page::<Enterprise, _>(
        &s,
        &park,
        move |e| matches(&needle, &e.id, &e.name),
        offset,
        limit,
    )
    .await?;
    let mut meta = metas(
        &s,
        &park,
        "enterprises",
        items.iter().map(|e| e.id.clone()).collect(),
    )
    .await?;
    Ok(Json(EnterprisePage {
        total,
        offset,
        enterprises: items
            .into_iter()
            .map(|e| enterprise_view(e, &mut meta))
            .collect(),
    }))
}

fn enterprise_view(
    e: Enterprise,
    meta: &mut std::collections::HashMap<String, RecordMeta>,
) -> EnterpriseView {
    EnterpriseView {
        meta: meta.remove(&e.id).unwrap_or_default(),
        status: e.status.as_str().into(),
        kind: e.kind.as_str().into(),
        id: e.id,
        name: e.name,
    }
}

async fn put_enterprise(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<EnterpriseBody>, JsonRejection>,
) -> ApiResult<Json<EnterpriseView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "enterprise_put",
        &format!("{park}/{id}"),
        json!({"name": b.name, "status": b.status, "kind": b.kind}),
    );
    let result = async {
        check_id("id", &id)?;
        let e = Enterprise {
            id: id.clone(),
            name: check_name("name", &b.name)?,
            status: parse("status", &b.status, &["active", "suspended"])?,
            kind: parse("kind", &b.kind, &["tenant", "operator"])?,
        };
        let stored = e.clone();
        edit(
            &s,
            &caller,
            &audit,
            &park,
            ("enterprises", &id),
            format!("hub: put enterprise {id}"),
            move |d| {
                d.upsert(&e)?;
                Ok(())
            },
        )
        .await?;
        let mut meta = metas(&s, &park, "enterprises", vec![id.clone()]).await?;
        Ok::<_, ApiError>(enterprise_view(stored, &mut meta))
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn list_people(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<PersonPage>> {
    let Query(q) = q?;
    let (needle, offset, limit) = page_args(&q)?;
    let of = q.of.clone();
    let (total, items) = read_page::<Person, _>(
        &s,
        &park,
        move |p| {
            of.as_deref().is_none_or(|e| p.enterprise_id == e) && matches(&needle, &p.id, &p.name)
        },
        offset,
        limit,
    )
    .await?;
    let mut meta = metas(
        &s,
        &park,
        "people",
        items.iter().map(|p| p.id.clone()).collect(),
    )
    .await?;
    Ok(Json(PersonPage {
        total,
        offset,
        people: items
            .into_iter()
            .map(|p| person_view(p, &mut meta))
            .collect(),
    }))
}

fn person_view(p: Person, meta: &mut std::collections::HashMap<String, RecordMeta>) -> PersonView {
    PersonView {
        meta: meta.remove(&p.id).unwrap_or_default(),
        status: p.status.as_str().into(),
        id: p.id,
        name: p.name,
        enterprise_id: p.enterprise_id,
        access_group_ids: p.access_group_ids,
    }
}

async fn put_person(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<PersonBody>, JsonRejection>,
) -> ApiResult<Json<PersonView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "person_put",
        &format!("{park}/{id}"),
        json!({"enterprise": b.enterprise_id, "status": b.status, "groups": b.access_group_ids}),
    );
    let result = async {
        check_id("id", &id)?;
        check_id("enterprise_id", &b.enterprise_id)?;
        if b.access_group_ids.len() > 100 {
            return Err(EditError::Field("access_group_ids: at most 100 groups".into()).into());
        }
        for g in &b.access_group_ids {
            check_id("access_group_ids", g)?;
        }
        let p = Person {
            id: id.clone(),
            name: check_name("name", &b.name)?,
            enterprise_id: b.enterprise_id.clone(),
            status: parse("status", &b.status, &["active", "suspended"])?,
            access_group_ids: b.access_group_ids.clone(),
        };
        let stored = p.clone();
        edit(
            &s,
            &caller,
            &audit,
            &park,
            ("people", &id),
            format!("hub: put person {id}"),
            move |d| {
                exists::<Enterprise>(d, "enterprise_id", &p.enterprise_id, "enterprise")?;
                for g in &p.access_group_ids {
                    exists::<AccessGroup>(d, "access_group_ids", g, "access group")?;
                }
                d.upsert(&p)?;
                Ok(())
            },
        )
        .await?;
        let mut meta = metas(&s, &park, "people", vec![id.clone()]).await?;
        Ok::<_, ApiError>(person_view(stored, &mut meta))
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn list_groups(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<AccessGroupPage>> {
    let Query(q) = q?;
    let (needle, offset, limit) = page_args(&q)?;
    let (total, items) = read_page::<AccessGroup, _>(
        &s,
        &park,
        move |g| matches(&needle, &g.id, &g.name),
        offset,
        limit,
    )
    .await?;
    let mut meta = metas(
        &s,
        &park,
        "access_groups",
        items.iter().map(|g| g.id.clone()).collect(),
    )
    .await?;
    Ok(Json(AccessGroupPage {
        total,
        offset,
        access_groups: items
            .into_iter()
            .map(|g| group_view(g, &mut meta))
            .collect(),
    }))
}

fn group_view(
    g: AccessGroup,
    meta: &mut std::collections::HashMap<String, RecordMeta>,
) -> AccessGroupView {
    AccessGroupView {
        meta: meta.remove(&g.id).unwrap_or_default(),
        id: g.id,
        name: g.name,
        door_ids: g.door_ids,
        schedule_id: g.schedule_id,
    }
}

async fn put_group(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<AccessGroupBody>, JsonRejection>,
) -> ApiResult<Json<AccessGroupView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "access_group_put",
        &format!("{park}/{id}"),
        json!({"doors": b.door_ids, "schedule": b.schedule_id}),
    );
    let result = async {
        check_id("id", &id)?;
        if b.door_ids.len() > 1000 {
            return Err(EditError::Field("door_ids: at most 1000 doors".into()).into());
        }
        for door in &b.door_ids {
            check_id("door_ids", door)?;
        }
        if let Some(sch) = &b.schedule_id {
            check_id("schedule_id", sch)?;
        }
        let g = AccessGroup {
            id: id.clone(),
            name: check_name("name", &b.name)?,
            door_ids: b.door_ids.clone(),
            schedule_id: b.schedule_id.clone(),
        };
        let stored = g.clone();
        edit(
            &s,
            &caller,
            &audit,
            &park,
            ("access_groups", &id),
            format!("hub: put access group {id}"),
            move |d| {
                if let Some(sch) = &g.schedule_id {
                    exists::<park_model::directory::WeeklySchedule>(
                        d,
                        "schedule_id",
                        sch,
                        "schedule",
                    )?;
                }
                d.upsert(&g)?;
                Ok(())
            },
        )
        .await?;
        let mut meta = metas(&s, &park, "access_groups", vec![id.clone()]).await?;
        Ok::<_, ApiError>(group_view(stored, &mut meta))
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

fn credential_view(
    c: Credential,
    meta: &mut std::collections::HashMap<String, RecordMeta>,
) -> CredentialView {
    CredentialView {
        meta: meta.remove(&c.id).unwrap_or_default(),
        masked: format!("••••{}", c.suffix),
        kind: c.kind.as_str().into(),
        status: c.status.as_str().into(),
        id: c.id,
        person_id: c.person_id,
        valid_from: c.valid_from,
        valid_to: c.valid_to,
    }
}

async fn list_credentials(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<CredentialPage>> {
    let Query(q) = q?;
    let (needle, offset, limit) = page_args(&q)?;
    let of = q.of.clone();
    let (total, items) = read_page::<Credential, _>(
        &s,
        &park,
        move |c| {
            of.as_deref().is_none_or(|p| c.person_id == p) && matches(&needle, &c.id, &c.person_id)
        },
        offset,
        limit,
    )
    .await?;
    let mut meta = metas(
        &s,
        &park,
        "credentials",
        items.iter().map(|c| c.id.clone()).collect(),
    )
    .await?;
    Ok(Json(CredentialPage {
        total,
        offset,
        credentials: items
            .into_iter()
            .map(|c| credential_view(c, &mut meta))
            .collect(),
    }))
}

async fn credential_status(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<CredentialStatusBody>, JsonRejection>,
) -> ApiResult<Json<CredentialView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "credential_status",
        &format!("{park}/{id}"),
        json!({"status": b.status, "reason": b.reason}),
    );
    let result = async {
        let status: CredentialStatus =
            parse("status", &b.status, &["active", "suspended", "lost"])?;
        if b.reason.trim().is_empty() || b.reason.chars().count() > 500 {
            return Err(EditError::Field("reason: must be 1 to 500 characters".into()).into());
        }
        let id2 = id.clone();
        let changed = edit(
            &s,
            &caller,
            &audit,
            &park,
            ("credentials", &id),
            format!("hub: set credential {id} {}", status.as_str()),
            move |d| {
                if d.get::<Credential>(&id2)?.is_none() {
                    return Err(EditError::NotFound(format!(
                        "no credential {id2} in this park"
                    )));
                }
                d.set_credential_status(&id2, status)?;
                Ok(d.require::<Credential>(&id2)?)
            },
        )
        .await?;
        let mut meta = metas(&s, &park, "credentials", vec![id.clone()]).await?;
        Ok::<_, ApiError>(credential_view(changed, &mut meta))
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}
