//! The park's master data, edited on the hub: enterprises, people and access groups in the
//! park's directory document, and the status of credentials. Every edit is checked (each
//! refusal names the field), made as one automerge change on the hub's editing copy of the
//! directory ([`Documents::edit_directory`]), committed to the store before it is answered,
//! audited, and synced to the park's edges, which decide their doors from it.
//!
//! Who made and changed each record, and when, is kept beside the document in
//! `master_meta` (the documents carry what the doors need, not their history).

use std::collections::BTreeMap;

use accounts::Caller;
use accounts::http::{ApiError, ApiResult, Routes, audit_outcome};
use accounts::openapi::{Doc, schemas};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};

use park_db::params;
use park_model::directory::{
    AccessGroup, Credential, CredentialStatus, Directory, Enterprise, Person,
};
use park_model::document::Entity;
use park_model::identity::Access;
use park_model::identity::Permission::{
    CredentialsEdit, EnterpriseRead, MasterDataEdit, TelemetryRead,
};
use park_model::{DocError, ParkDirectory};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::ApiState;
use crate::store::{HubStore, now_micros};
use crate::sync::Documents;

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
    .put(
        "/api/v1/parks/{park}/credentials/{credential}",
        Allowed(CredentialsEdit),
        put_credential,
    )
    .doc(
        doc("master data", "Issue a credential (card, QR code, PIN or plate) to a person")
            .describe("The hub keeps only the value's keyed digest under the park's credential key and its last characters; the value is never stored, logged or answered.")
            .body::<CredentialBody>()
            .returns::<CredentialView>(),
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
    .get(
        "/api/v1/parks/{park}/enterprises/{enterprise}",
        Allowed(EnterpriseRead),
        get_enterprise,
    )
    .doc(doc("enterprise", "One enterprise, for its own people and anyone above them").returns::<EnterpriseView>())
    .get(
        "/api/v1/parks/{park}/enterprises/{enterprise}/people",
        Allowed(EnterpriseRead),
        list_enterprise_people,
    )
    .doc(
        doc("enterprise", "The enterprise's people, a page at a time")
            .describe("`of` is ignored: the path names the enterprise.")
            .query::<ListQuery>()
            .returns::<PersonPage>(),
    )
    .get(
        "/api/v1/parks/{park}/enterprises/{enterprise}/credentials",
        Allowed(EnterpriseRead),
        list_enterprise_credentials,
    )
    .doc(
        doc(
            "enterprise",
            "The credentials of the enterprise's people, masked, a page at a time",
        )
        .describe("`of` names one of the enterprise's people.")
        .query::<ListQuery>()
        .returns::<CredentialPage>(),
    )
}

// ---- what the API takes and gives ----

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Records whose id or name contains this (case-insensitive).
    #[param(max_length = 128)]
    pub(crate) q: Option<String>,
    /// Only this enterprise's people (people), this person's credentials (credentials),
    /// this lot's lanes (lanes), this enterprise's passes and allowances.
    #[param(max_length = 128)]
    pub(crate) of: Option<String>,
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
    #[schema(schema_with = schemas::enterprise_statuses)]
    status: String,
    #[schema(schema_with = schemas::enterprise_kinds)]
    kind: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnterpriseView {
    pub id: String,
    pub name: String,
    #[schema(schema_with = schemas::enterprise_statuses)]
    pub status: String,
    #[schema(schema_with = schemas::enterprise_kinds)]
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
    #[schema(schema_with = schemas::person_statuses)]
    status: String,
    #[serde(default)]
    access_group_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PersonView {
    pub id: String,
    pub name: String,
    pub enterprise_id: String,
    #[schema(schema_with = schemas::person_statuses)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    #[schema(max_length = 128)]
    person_id: String,
    #[schema(schema_with = schemas::credential_kinds)]
    kind: String,
    /// The card's number, the QR code's text, the PIN or the plate, in clear: only its
    /// keyed digest is kept.
    #[schema(min_length = 1, max_length = 256)]
    value: String,
    /// Microseconds since 1970; none for always.
    #[serde(default, deserialize_with = "accounts::openapi::whole::opt_i64")]
    valid_from: Option<i64>,
    #[serde(default, deserialize_with = "accounts::openapi::whole::opt_i64")]
    valid_to: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialStatusBody {
    #[schema(schema_with = schemas::credential_statuses)]
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
    #[schema(schema_with = schemas::credential_statuses)]
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
pub(crate) enum EditError {
    Field { field: String, message: String },
    NotFound(String),
    Doc(DocError),
}

impl EditError {
    pub(crate) fn field(field: &str, message: impl Into<String>) -> EditError {
        EditError::Field {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl From<DocError> for EditError {
    fn from(e: DocError) -> Self {
        EditError::Doc(e)
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::Field { field, message } => ApiError::invalid(format!("{field}: {message}")),
            EditError::NotFound(m) => ApiError::not_found(m),
            EditError::Doc(e) => ApiError::invalid(e.to_string()),
        }
    }
}

/// An id as the documents take them: 1 to 128 letters, digits, `-`, `_`, `.`.
pub(crate) fn check_id(field: &str, id: &str) -> Result<(), EditError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EditError::field(
            field,
            format!("{id:?} is not an id (1 to 128 letters, digits, '-', '_' or '.')"),
        ))
    }
}

pub(crate) fn check_name(field: &str, name: &str) -> Result<String, EditError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(EditError::field(
            field,
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(name.to_string())
}

pub(crate) fn parse<T: std::str::FromStr>(
    field: &str,
    value: &str,
    all: &[&str],
) -> Result<T, EditError> {
    value
        .parse()
        .map_err(|_| EditError::field(field, format!("{value:?} is not one of {}", all.join(", "))))
}

pub(crate) fn exists<E: Entity>(
    d: &park_model::Document<E::Schema>,
    field: &str,
    id: &str,
    what: &str,
) -> Result<(), EditError> {
    match d.get::<E>(id)? {
        Some(_) => Ok(()),
        None => Err(EditError::field(
            field,
            format!("no {what} {id:?} in this park"),
        )),
    }
}

/// An enterprise from its fields as people give them, checked.
pub(crate) fn enterprise_from(
    id: &str,
    name: &str,
    status: &str,
    kind: &str,
) -> Result<Enterprise, EditError> {
    check_id("id", id)?;
    Ok(Enterprise {
        id: id.to_string(),
        name: check_name("name", name)?,
        status: parse("status", status, &["active", "suspended"])?,
        kind: parse("kind", kind, &["tenant", "operator"])?,
    })
}

/// A person from their fields as people give them, checked on their own (see
/// [`person_refs`] for what they name).
pub(crate) fn person_from(
    id: &str,
    name: &str,
    enterprise_id: &str,
    status: &str,
    access_group_ids: Vec<String>,
) -> Result<Person, EditError> {
    check_id("id", id)?;
    check_id("enterprise_id", enterprise_id)?;
    if access_group_ids.len() > 100 {
        return Err(EditError::field("access_group_ids", "at most 100 groups"));
    }
    for g in &access_group_ids {
        check_id("access_group_ids", g)?;
    }
    Ok(Person {
        id: id.to_string(),
        name: check_name("name", name)?,
        enterprise_id: enterprise_id.to_string(),
        status: parse("status", status, &["active", "suspended"])?,
        access_group_ids,
    })
}

/// A credential from its fields as people give them, digested under the park's key: the
/// value in clear goes no further than this.
pub(crate) fn credential_from(
    key: &park_model::directory::CredentialKey,
    id: &str,
    person_id: &str,
    kind: &str,
    value: &str,
    valid: (Option<i64>, Option<i64>),
) -> Result<Credential, EditError> {
    check_id("id", id)?;
    check_id("person_id", person_id)?;
    let kind = parse("kind", kind, &["card", "qr", "pin", "plate"])?;
    let value = value.trim();
    if value.is_empty() || value.chars().count() > 256 || value.chars().any(char::is_control) {
        return Err(EditError::field(
            "value",
            "must be 1 to 256 characters without control characters",
        ));
    }
    if let (Some(from), Some(to)) = valid
        && from >= to
    {
        return Err(EditError::field("valid_to", "must be after valid_from"));
    }
    park_model::directory::RawCredential {
        id: id.to_string(),
        person_id: person_id.to_string(),
        kind,
        value: value.to_string(),
        status: CredentialStatus::Active,
        valid_from: valid.0,
        valid_to: valid.1,
    }
    .digest(key)
    .map_err(|e| EditError::field("value", e.to_string()))
}

/// The park's credential key, or why the hub cannot issue credentials for the park.
pub(crate) fn park_key(
    s: &ApiState,
    park: &str,
) -> Result<park_model::directory::CredentialKey, ApiError> {
    s.credential_keys.get(park).cloned().ok_or_else(|| {
        ApiError::invalid(format!(
            "this hub holds no credential key for park {park} (add it under [documents.credential_keys] in the hub's config)"
        ))
    })
}

/// That the enterprise and groups a person names are the park's.
pub(crate) fn person_refs(d: &ParkDirectory, p: &Person) -> Result<(), EditError> {
    exists::<Enterprise>(d, "enterprise_id", &p.enterprise_id, "enterprise")?;
    for g in &p.access_group_ids {
        exists::<AccessGroup>(d, "access_group_ids", g, "access group")?;
    }
    Ok(())
}

// ---- handlers ----

pub(crate) fn no_park(park: &str) -> ApiError {
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

pub(crate) fn matches(needle: &str, id: &str, name: &str) -> bool {
    needle.is_empty() || id.to_lowercase().contains(needle) || name.to_lowercase().contains(needle)
}

/// The meta rows of `ids` in `collection`, in the same order (empty for records from a
/// seed file).
pub(crate) async fn metas(
    s: &ApiState,
    park: &str,
    collection: &'static str,
    ids: Vec<String>,
) -> ApiResult<Vec<RecordMeta>> {
    let park = park.to_string();
    s.store
        .read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT created_at, created_by, updated_at, updated_by FROM master_meta
                 WHERE park = ?1 AND collection = ?2 AND id = ?3",
            )?;
            Ok(ids
                .iter()
                .map(|id| {
                    stmt.query_row(params![park, collection, id], |r| {
                        Ok(RecordMeta {
                            created_at: r.get(0)?,
                            created_by: r.get(1)?,
                            updated_at: r.get(2)?,
                            updated_by: r.get(3)?,
                        })
                    })
                    .unwrap_or_default()
                })
                .collect())
        })
        .await
        .map_err(ApiError::internal)
}

/// Queues who made (or last changed) `ids` of `collection`, and when, in `master_meta`
/// (the caller flushes the store): the first writer stays the record's creator.
pub(crate) fn record_meta(
    s: &ApiState,
    park: &str,
    collection: &'static str,
    ids: Vec<String>,
    caller: &Caller,
) {
    let (park, by, now) = (park.to_string(), caller.actor().name, now_micros());
    s.store.write_nowait(Box::new(move |c| {
        let mut stmt = c.prepare_cached(
            "INSERT INTO master_meta (park, collection, id, created_at, created_by, updated_at, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?5)
             ON CONFLICT (park, collection, id) DO UPDATE SET updated_at = excluded.updated_at,
                 updated_by = excluded.updated_by",
        )?;
        for id in &ids {
            stmt.execute(params![park, collection, id, now, by])?;
        }
        Ok(())
    }));
}

/// A page of a collection of the park's directory (the one `pick` names in the park's
/// snapshot, read again only after a change): see [`page_of`].
pub(crate) async fn list<E, V>(
    s: &ApiState,
    park: &str,
    q: ListQuery,
    pick: fn(&Directory) -> &BTreeMap<String, E>,
    keep: impl Fn(&E, &Directory, &str, Option<&str>) -> bool,
    view: fn(E, RecordMeta) -> V,
) -> ApiResult<(usize, usize, Vec<V>)>
where
    E: Entity<Schema = park_model::directory::DirectorySchema> + Clone + Send + 'static,
{
    let documents = s.documents.clone();
    let park2 = park.to_string();
    let read = tokio::task::spawn_blocking(move || documents.directory_snapshot(&park2))
        .await
        .map_err(|e| ApiError::internal(e.into()))?;
    let snapshot = match read {
        None => return Err(no_park(park)),
        Some(r) => r.map_err(|e| ApiError::internal(e.into()))?,
    };
    page_of(
        s,
        park,
        &q,
        pick(&snapshot).values(),
        |e, needle, of| keep(e, &snapshot, needle, of),
        view,
    )
    .await
}

/// The records of `all` that `keep` takes (given the lowercased search text and the `of`
/// filter), in the order given, paged as `q` asks, as views with their meta. Returns the
/// total that match, the offset and the page.
pub(crate) async fn page_of<'a, E, V>(
    s: &ApiState,
    park: &str,
    q: &ListQuery,
    all: impl Iterator<Item = &'a E>,
    keep: impl Fn(&E, &str, Option<&str>) -> bool,
    view: fn(E, RecordMeta) -> V,
) -> ApiResult<(usize, usize, Vec<V>)>
where
    E: Entity + Clone + 'a,
{
    let (needle, offset, limit) = page_args(q)?;
    let mut total = 0;
    let mut items: Vec<E> = Vec::new();
    for e in all {
        if keep(e, &needle, q.of.as_deref()) {
            if total >= offset && items.len() < limit {
                items.push(e.clone());
            }
            total += 1;
        }
    }
    let ids = items.iter().map(|e| e.id().to_string()).collect();
    let meta = metas(s, park, E::COLLECTION.as_str(), ids).await?;
    Ok((
        total,
        offset,
        items
            .into_iter()
            .zip(meta)
            .map(|(e, m)| view(e, m))
            .collect(),
    ))
}

/// Makes an edit of the park's directory (see [`edit_record`]).
pub(crate) async fn put<E, V>(
    s: &ApiState,
    caller: &Caller,
    park: &str,
    id: &str,
    audit: accounts::Audit,
    edit: impl FnOnce(&mut ParkDirectory) -> Result<E, EditError> + Send + 'static,
    view: fn(E, RecordMeta) -> V,
) -> ApiResult<Json<V>>
where
    E: Entity<Schema = park_model::directory::DirectorySchema> + Send + 'static,
{
    let apply = move |d: &Documents, store: &HubStore, park: &str, message: &str| {
        d.edit_directory(store, park, message, edit)
    };
    edit_record::<E, V>(s, caller, park, id, audit, apply, view).await
}

/// Makes an edit of one of the park's documents (`apply`, given the documents, the store,
/// the park and the change's message), records it in the audit chain and who made it,
/// waits until all of it is stored, and answers the record as it now is (or the refusal,
/// audited too).
pub(crate) async fn edit_record<E, V>(
    s: &ApiState,
    caller: &Caller,
    park: &str,
    id: &str,
    audit: accounts::Audit,
    apply: impl FnOnce(&Documents, &HubStore, &str, &str) -> Option<Result<E, EditError>>
    + Send
    + 'static,
    view: fn(E, RecordMeta) -> V,
) -> ApiResult<Json<V>>
where
    E: Entity + Send + 'static,
{
    let collection = E::COLLECTION.as_str();
    let result = async {
        check_id("id", id)?;
        let (documents, store, park2) = (s.documents.clone(), s.store.clone(), park.to_string());
        let message = format!("hub: {} {collection}/{id}", audit.action);
        let done = tokio::task::spawn_blocking(move || apply(&documents, &store, &park2, &message))
            .await
            .map_err(|e| ApiError::internal(e.into()))?;
        let record = match done {
            None => {
                return Err(ApiError::not_found(format!(
                    "park {park} has no document of {collection} on this hub"
                )));
            }
            Some(r) => r?,
        };
        s.auth
            .record(audit.clone())
            .await
            .map_err(ApiError::internal)?;
        record_meta(s, park, collection, vec![id.to_string()], caller);
        s.store.flush().await;
        let meta = metas(s, park, collection, vec![id.to_string()]).await?;
        Ok::<_, ApiError>(view(record, meta.into_iter().next().unwrap_or_default()))
    }
    .await;
    Ok(Json(audit_outcome(&s.auth, audit, result).await?))
}

async fn list_enterprises(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<EnterprisePage>> {
    let Query(q) = q?;
    let keep = |e: &Enterprise, _: &Directory, needle: &str, _: Option<&str>| {
        matches(needle, &e.id, &e.name)
    };
    let (total, offset, enterprises) =
        list(&s, &park, q, |d| &d.enterprises, keep, enterprise_view).await?;
    Ok(Json(EnterprisePage {
        total,
        offset,
        enterprises,
    }))
}

fn enterprise_view(e: Enterprise, meta: RecordMeta) -> EnterpriseView {
    EnterpriseView {
        meta,
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
    let id2 = id.clone();
    let edit = move |d: &mut ParkDirectory| {
        let e = enterprise_from(&id2, &b.name, &b.status, &b.kind)?;
        d.upsert(&e)?;
        Ok(e)
    };
    put(&s, &caller, &park, &id, audit, edit, enterprise_view).await
}

async fn list_people(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<PersonPage>> {
    let Query(q) = q?;
    let keep = |p: &Person, _: &Directory, needle: &str, of: Option<&str>| {
        of.is_none_or(|e| p.enterprise_id == e) && matches(needle, &p.id, &p.name)
    };
    let (total, offset, people) = list(&s, &park, q, |d| &d.people, keep, person_view).await?;
    Ok(Json(PersonPage {
        total,
        offset,
        people,
    }))
}

fn person_view(p: Person, meta: RecordMeta) -> PersonView {
    PersonView {
        meta,
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
    let id2 = id.clone();
    let edit = move |d: &mut ParkDirectory| {
        let p = person_from(
            &id2,
            &b.name,
            &b.enterprise_id,
            &b.status,
            b.access_group_ids,
        )?;
        person_refs(d, &p)?;
        d.upsert(&p)?;
        Ok(p)
    };
    put(&s, &caller, &park, &id, audit, edit, person_view).await
}

async fn list_groups(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<AccessGroupPage>> {
    let Query(q) = q?;
    let keep = |g: &AccessGroup, _: &Directory, needle: &str, _: Option<&str>| {
        matches(needle, &g.id, &g.name)
    };
    let (total, offset, access_groups) =
        list(&s, &park, q, |d| &d.access_groups, keep, group_view).await?;
    Ok(Json(AccessGroupPage {
        total,
        offset,
        access_groups,
    }))
}

fn group_view(g: AccessGroup, meta: RecordMeta) -> AccessGroupView {
    AccessGroupView {
        meta,
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
    let id2 = id.clone();
    let edit = move |d: &mut ParkDirectory| {
        if b.door_ids.len() > 1000 {
            return Err(EditError::field("door_ids", "at most 1000 doors"));
        }
        for door in &b.door_ids {
            check_id("door_ids", door)?;
        }
        if let Some(sch) = &b.schedule_id {
            check_id("schedule_id", sch)?;
            exists::<park_model::directory::WeeklySchedule>(d, "schedule_id", sch, "schedule")?;
        }
        let g = AccessGroup {
            id: id2,
            name: check_name("name", &b.name)?,
            door_ids: b.door_ids,
            schedule_id: b.schedule_id,
        };
        d.upsert(&g)?;
        Ok(g)
    };
    put(&s, &caller, &park, &id, audit, edit, group_view).await
}

fn credential_view(c: Credential, meta: RecordMeta) -> CredentialView {
    CredentialView {
        meta,
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
    let keep = |c: &Credential, _: &Directory, needle: &str, of: Option<&str>| {
        of.is_none_or(|p| c.person_id == p) && matches(needle, &c.id, &c.person_id)
    };
    let (total, offset, credentials) =
        list(&s, &park, q, |d| &d.credentials, keep, credential_view).await?;
    Ok(Json(CredentialPage {
        total,
        offset,
        credentials,
    }))
}

async fn put_credential(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<CredentialBody>, JsonRejection>,
) -> ApiResult<Json<CredentialView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "credential_put",
        &format!("{park}/{id}"),
        json!({"person": b.person_id, "kind": b.kind, "validFrom": b.valid_from, "validTo": b.valid_to}),
    );
    let key = match park_key(&s, &park) {
        Ok(k) => k,
        Err(e) => return Ok(Json(audit_outcome(&s.auth, audit, Err(e)).await?)),
    };
    let id2 = id.clone();
    let edit = move |d: &mut ParkDirectory| {
        let c = credential_from(
            &key,
            &id2,
            &b.person_id,
            &b.kind,
            &b.value,
            (b.valid_from, b.valid_to),
        )?;
        exists::<Person>(d, "person_id", &c.person_id, "person")?;
        d.upsert(&c)?;
        Ok(c)
    };
    put(&s, &caller, &park, &id, audit, edit, credential_view).await
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
    let id2 = id.clone();
    let edit = move |d: &mut ParkDirectory| {
        let status: CredentialStatus =
            parse("status", &b.status, &["active", "suspended", "lost"])?;
        if b.reason.trim().is_empty() || b.reason.chars().count() > 500 {
            return Err(EditError::field("reason", "must be 1 to 500 characters"));
        }
        if d.get::<Credential>(&id2)?.is_none() {
            return Err(EditError::NotFound(format!(
                "no credential {id2} in this park"
            )));
        }
        d.set_credential_status(&id2, status)?;
        Ok(d.require::<Credential>(&id2)?)
    };
    put(&s, &caller, &park, &id, audit, edit, credential_view).await
}

// ---- one enterprise's own view (its admins and users, and anyone above them) ----

async fn get_enterprise(
    State(s): State<ApiState>,
    Path((park, id)): Path<(String, String)>,
) -> ApiResult<Json<EnterpriseView>> {
    let q = ListQuery {
        q: None,
        of: None,
        offset: None,
        limit: Some(1),
    };
    let id2 = id.clone();
    let keep = move |e: &Enterprise, _: &Directory, _: &str, _: Option<&str>| e.id == id2;
    let (_, _, found) = list(&s, &park, q, |d| &d.enterprises, keep, enterprise_view).await?;
    found
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no enterprise {id} in park {park}")))
}

async fn list_enterprise_people(
    State(s): State<ApiState>,
    Path((park, enterprise)): Path<(String, String)>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<PersonPage>> {
    let Query(q) = q?;
    // The path names the enterprise; `of` cannot widen it, and is ignored.
    let keep = move |p: &Person, _: &Directory, needle: &str, _: Option<&str>| {
        p.enterprise_id == enterprise && matches(needle, &p.id, &p.name)
    };
    let (total, offset, people) = list(&s, &park, q, |d| &d.people, keep, person_view).await?;
    Ok(Json(PersonPage {
        total,
        offset,
        people,
    }))
}

async fn list_enterprise_credentials(
    State(s): State<ApiState>,
    Path((park, enterprise)): Path<(String, String)>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<CredentialPage>> {
    let Query(q) = q?;
    let keep = move |c: &Credential, d: &Directory, needle: &str, of: Option<&str>| {
        d.people
            .get(&c.person_id)
            .is_some_and(|p| p.enterprise_id == enterprise)
            && of.is_none_or(|p| c.person_id == p)
            && matches(needle, &c.id, &c.person_id)
    };
    let (total, offset, credentials) =
        list(&s, &park, q, |d| &d.credentials, keep, credential_view).await?;
    Ok(Json(CredentialPage {
        total,
        offset,
        credentials,
    }))
}
