//! The park's spaces (floors, rooms and workstations with their area and state), weekly
//! schedules and holiday calendars, edited on the hub in the park's directory like the
//! rest of its master data ([`crate::master`]): checked with refusals that name the field,
//! one change each, audited, stored before the answer, synced to the edges (whose doors
//! open by the schedules).

use accounts::Caller;
use accounts::http::{ApiResult, Routes};
use accounts::openapi::Doc;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use park_model::ParkDirectory;
use park_model::directory::{
    Directory, HolidayCalendar, Interval, Space, SpaceKind, SpaceState, Week, WeeklySchedule,
};
use park_model::identity::Access;
use park_model::identity::Permission::{MasterDataEdit, TelemetryRead};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::ApiState;
use crate::master::{
    EditError, ListQuery, RecordMeta, check_id, check_name, exists, list, matches, parse, put,
};

/// The routes of spaces, schedules and calendars.
pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::Allowed;
    let doc = Doc::new;
    r.get(
        "/api/v1/parks/{park}/spaces",
        Allowed(TelemetryRead),
        list_spaces,
    )
    .doc(
        doc("master data", "The park's spaces, a page at a time")
            .describe("`of` names a building.")
            .query::<ListQuery>()
            .returns::<SpacePage>(),
    )
    .put(
        "/api/v1/parks/{park}/spaces/{space}",
        Allowed(MasterDataEdit),
        put_space,
    )
    .doc(
        doc(
            "master data",
            "Create or change a space: floor, room or workstation, with its area and state",
        )
        .body::<SpaceBody>()
        .returns::<SpaceView>(),
    )
    .get(
        "/api/v1/parks/{park}/schedules",
        Allowed(TelemetryRead),
        list_schedules,
    )
    .doc(
        doc(
            "master data",
            "The park's weekly schedules, a page at a time",
        )
        .query::<ListQuery>()
        .returns::<SchedulePage>(),
    )
    .put(
        "/api/v1/parks/{park}/schedules/{schedule}",
        Allowed(MasterDataEdit),
        put_schedule,
    )
    .doc(
        doc(
            "master data",
            "Create or change a weekly schedule (the times an access group opens its doors)",
        )
        .body::<ScheduleBody>()
        .returns::<ScheduleView>(),
    )
    .get(
        "/api/v1/parks/{park}/holiday-calendars",
        Allowed(TelemetryRead),
        list_calendars,
    )
    .doc(
        doc(
            "master data",
            "The park's holiday calendars, a page at a time",
        )
        .query::<ListQuery>()
        .returns::<CalendarPage>(),
    )
    .put(
        "/api/v1/parks/{park}/holiday-calendars/{calendar}",
        Allowed(MasterDataEdit),
        put_calendar,
    )
    .doc(
        doc("master data", "Create or change a holiday calendar")
            .body::<CalendarBody>()
            .returns::<CalendarView>(),
    )
}

fn space_kinds() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["floor", "room", "workstation"])
}

fn space_states() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    accounts::openapi::one_of(["vacant", "reserved", "leased"])
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpaceBody {
    #[schema(max_length = 128)]
    building_id: String,
    /// -10 (basements) to 300.
    #[schema(minimum = -10, maximum = 300)]
    floor: i32,
    /// Square metres, up to 1,000,000, at most two decimals.
    #[schema(minimum = 0, maximum = 1_000_000)]
    area_m2: f64,
    #[schema(max_length = 200)]
    name: String,
    #[schema(schema_with = space_kinds)]
    kind: String,
    #[schema(schema_with = space_states)]
    state: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpaceView {
    pub id: String,
    pub building_id: String,
    pub floor: i32,
    pub area_m2: f64,
    pub name: String,
    #[schema(schema_with = space_kinds)]
    pub kind: String,
    #[schema(schema_with = space_states)]
    pub state: String,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpacePage {
    pub total: usize,
    pub offset: usize,
    pub spaces: Vec<SpaceView>,
}

/// Minutes `[start_minute, end_minute)` of a day.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntervalBody {
    #[schema(minimum = 0, maximum = 1439)]
    start_minute: u16,
    #[schema(minimum = 1, maximum = 1440)]
    end_minute: u16,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    #[schema(max_length = 200)]
    name: String,
    /// Seven days, Monday first, each a list of intervals (none: closed that day).
    #[schema(min_items = 7, max_items = 7)]
    weekdays: Vec<Vec<IntervalBody>>,
    #[schema(max_length = 128)]
    holiday_calendar_id: Option<String>,
    /// On the calendar's holidays: `false` keeps the doors shut all day, `true` opens them
    /// as on the weekday.
    #[serde(default)]
    allow_on_holidays: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub name: String,
    /// Monday first.
    pub weekdays: Vec<Vec<IntervalBody>>,
    pub holiday_calendar_id: Option<String>,
    pub allow_on_holidays: bool,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulePage {
    pub total: usize,
    pub offset: usize,
    pub schedules: Vec<ScheduleView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarBody {
    #[schema(max_length = 200)]
    name: String,
    /// Park-local dates `YYYY-MM-DD`, at most 1,000.
    #[schema(max_items = 1000)]
    dates: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CalendarView {
    pub id: String,
    pub name: String,
    pub dates: Vec<String>,
    pub meta: RecordMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CalendarPage {
    pub total: usize,
    pub offset: usize,
    pub holiday_calendars: Vec<CalendarView>,
}

// ---- spaces ----

fn space_view(s: Space, meta: RecordMeta) -> SpaceView {
    SpaceView {
        kind: s.kind.as_str().into(),
        state: s.state.as_str().into(),
        id: s.id,
        building_id: s.building_id,
        floor: s.floor,
        area_m2: s.area_m2,
        name: s.name,
        meta,
    }
}

async fn list_spaces(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<SpacePage>> {
    let Query(q) = q?;
    let keep = |sp: &Space, _: &Directory, needle: &str, of: Option<&str>| {
        of.is_none_or(|b| sp.building_id == b) && matches(needle, &sp.id, &sp.name)
    };
    let (total, offset, spaces) = list(&s, &park, q, |d| &d.spaces, keep, space_view).await?;
    Ok(Json(SpacePage {
        total,
        offset,
        spaces,
    }))
}

async fn put_space(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<SpaceBody>, JsonRejection>,
) -> ApiResult<Json<SpaceView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "space_put",
        &format!("{park}/{id}"),
        json!({"building": b.building_id, "floor": b.floor, "area": b.area_m2, "kind": b.kind, "state": b.state}),
    );
    let id2 = id.clone();
    let edit = move |d: &mut ParkDirectory| {
        check_id("building_id", &b.building_id)?;
        if !(-10..=300).contains(&b.floor) {
            return Err(EditError::field("floor", "must be -10 to 300"));
        }
        // Areas are kept to the hundredth of a square metre, as leases quote them.
        let area = (b.area_m2 * 100.0).round() / 100.0;
        if !b.area_m2.is_finite() || !(0.0..=1_000_000.0).contains(&area) {
            return Err(EditError::field(
                "area_m2",
                "must be 0 to 1000000 square metres",
            ));
        }
        let sp = Space {
            id: id2,
            building_id: b.building_id,
            floor: b.floor,
            area_m2: area,
            name: check_name("name", &b.name)?,
            kind: parse::<SpaceKind>("kind", &b.kind, &["floor", "room", "workstation"])?,
            state: parse::<SpaceState>("state", &b.state, &["vacant", "reserved", "leased"])?,
        };
        d.upsert(&sp)?;
        Ok(sp)
    };
    put(&s, &caller, &park, &id, audit, edit, space_view).await
}

// ---- schedules and calendars ----

fn schedule_view(w: WeeklySchedule, meta: RecordMeta) -> ScheduleView {
    ScheduleView {
        weekdays: w
            .weekdays
            .0
            .iter()
            .map(|day| {
                day.iter()
                    .map(|i| IntervalBody {
                        start_minute: i.start_minute,
                        end_minute: i.end_minute,
                    })
                    .collect()
            })
            .collect(),
        id: w.id,
        name: w.name,
        holiday_calendar_id: w.holiday_calendar_id,
        allow_on_holidays: w.allow_on_holidays,
        meta,
    }
}

async fn list_schedules(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<SchedulePage>> {
    let Query(q) = q?;
    let keep = |w: &WeeklySchedule, _: &Directory, needle: &str, _: Option<&str>| {
        matches(needle, &w.id, &w.name)
    };
    let (total, offset, schedules) =
        list(&s, &park, q, |d| &d.schedules, keep, schedule_view).await?;
    Ok(Json(SchedulePage {
        total,
        offset,
        schedules,
    }))
}

async fn put_schedule(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<ScheduleBody>, JsonRejection>,
) -> ApiResult<Json<ScheduleView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "schedule_put",
        &format!("{park}/{id}"),
        json!({"weekdays": b.weekdays, "calendar": b.holiday_calendar_id, "holidays": b.allow_on_holidays}),
    );
    let id2 = id.clone();
    let edit = move |d: &mut ParkDirectory| {
        if b.weekdays.len() != 7 {
            return Err(EditError::field(
                "weekdays",
                "must list seven days, Monday first",
            ));
        }
        let mut week = Week::default();
        for (day, intervals) in b.weekdays.iter().enumerate() {
            if intervals.len() > 24 {
                return Err(EditError::field("weekdays", "at most 24 intervals a day"));
            }
            for i in intervals {
                if i.start_minute >= i.end_minute || i.end_minute > 1440 {
                    return Err(EditError::field(
                        "weekdays",
                        format!(
                            "day {}: [{}, {}) is not a time span within a day",
                            day + 1,
                            i.start_minute,
                            i.end_minute
                        ),
                    ));
                }
                week.0[day].push(Interval::new(i.start_minute, i.end_minute));
            }
            week.0[day].sort();
        }
        if let Some(c) = &b.holiday_calendar_id {
            check_id("holiday_calendar_id", c)?;
            exists::<HolidayCalendar>(d, "holiday_calendar_id", c, "holiday calendar")?;
        }
        let w = WeeklySchedule {
            id: id2,
            name: check_name("name", &b.name)?,
            weekdays: week,
            holiday_calendar_id: b.holiday_calendar_id,
            allow_on_holidays: b.allow_on_holidays,
        };
        d.upsert(&w)?;
        Ok(w)
    };
    put(&s, &caller, &park, &id, audit, edit, schedule_view).await
}

fn calendar_view(c: HolidayCalendar, meta: RecordMeta) -> CalendarView {
    CalendarView {
        id: c.id,
        name: c.name,
        dates: c.dates,
        meta,
    }
}

async fn list_calendars(
    State(s): State<ApiState>,
    Path(park): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<CalendarPage>> {
    let Query(q) = q?;
    let keep = |c: &HolidayCalendar, _: &Directory, needle: &str, _: Option<&str>| {
        matches(needle, &c.id, &c.name)
    };
    let (total, offset, holiday_calendars) =
        list(&s, &park, q, |d| &d.holiday_calendars, keep, calendar_view).await?;
    Ok(Json(CalendarPage {
        total,
        offset,
        holiday_calendars,
    }))
}

async fn put_calendar(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, id)): Path<(String, String)>,
    body: Result<Json<CalendarBody>, JsonRejection>,
) -> ApiResult<Json<CalendarView>> {
    let Json(b) = body?;
    let audit = s.auth.audit(
        &caller.actor(),
        "holiday_calendar_put",
        &format!("{park}/{id}"),
        json!({"dates": b.dates.len()}),
    );
    let id2 = id.clone();
    let edit = move |d: &mut ParkDirectory| {
        if b.dates.len() > 1000 {
            return Err(EditError::field("dates", "at most 1000 dates"));
        }
        let mut dates = b.dates;
        dates.sort();
        dates.dedup();
        let c = HolidayCalendar {
            id: id2,
            name: check_name("name", &b.name)?,
            dates,
        };
        if let Err(e) = park_model::document::Entity::validate(&c) {
            return Err(EditError::field("dates", e));
        }
        d.upsert(&c)?;
        Ok(c)
    };
    put(&s, &caller, &park, &id, audit, edit, calendar_view).await
}
