//! Writes: `POST [base]/{type}` (create), `PUT [base]/{type}/{id}`
//! (update or create), `DELETE [base]/{type}/{id}`, and `POST [base]` with a
//! `transaction` or `batch` Bundle.
//!
//! Every accepted resource becomes one record in `fhir.inbound` (a
//! Subscription: in `fhir.Subscription`), appended durably BEFORE the
//! answer; a transaction's records are written in one atomic step, so a
//! refused transaction stores nothing and an accepted one stores all of it.
//! The answer waits briefly for the view to index the write, so that the
//! client can read it back at once and gets its `versionId`.

use super::auth::Access;
use super::outcome::{FhirError, FHIR_JSON};
use super::resource::{self, check_id, check_type, id_of, type_of};
use super::view::Stored;
use super::{subscription, tagged, Ctx, INBOUND_TOPIC, VIEW_WAIT, VIEW_WAIT_MAX};
use crate::headers;
use crate::storage::{now_ms, AtomicWrite, Record};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// Most entries in one transaction or batch Bundle: one atomic write holds
/// them all, and each is answered in one response.
pub const MAX_BUNDLE_ENTRIES: usize = 1000;

/// A request body, read, with its slot ([`super::BODY_SLOTS`]): held until
/// the request is answered.
struct Body {
    bytes: Vec<u8>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Read a body, refusing one over `cap` bytes before buffering it, and one
/// that takes longer than the request timeout to arrive (408); then wait
/// for a slot to parse it in (503 when none frees up in time).
async fn read_body(
    ctx: &Ctx,
    req: &HttpRequest,
    mut payload: web::Payload,
    cap: usize,
) -> Result<Body, FhirError> {
    let too_large = || {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            "too-long",
            format!("the body is larger than this server's limit of {cap} bytes"),
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    let read = async {
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(cap));
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| FhirError::invalid(format!("cannot read the body: {e}")))?;
            if body.len() + chunk.len() > cap {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let bytes = tokio::time::timeout(ctx.request_timeout, read)
        .await
        .map_err(|_| {
            FhirError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the body did not arrive within {:?} (fhir.request_timeout)",
                    ctx.request_timeout
                ),
            )
        })??;
    // Parsing waits for a slot (the raw body, at most max_body, is all
    // that is held meanwhile): a slow upload holds no slot.
    let slot = tokio::time::timeout(VIEW_WAIT_MAX, ctx.bodies.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            FhirError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                format!("too many requests in progress for {VIEW_WAIT_MAX:?}: try again later"),
            )
        })?;
    Ok(Body { bytes, _slot: slot })
}

/// The topic a resource of type `t` is written to.
fn topic_for(t: &str) -> &'static str {
    if t == "Subscription" {
        subscription::TOPIC
    } else {
        INBOUND_TOPIC
    }
}

/// One resource ready to be written.
struct Write {
    resource_type: String,
    id: String,
    topic: &'static str,
    record: Record,
}

fn record_for(
    req: &HttpRequest,
    map: &Map<String, Value>,
    interaction: &str,
    deleted: bool,
) -> Write {
    let t = type_of(map).to_string();
    let id = id_of(map).unwrap_or_default().to_string();
    let mut h = vec![
        (headers::FHIR_RESOURCE_TYPE.to_string(), t.clone()),
        (headers::FHIR_ID.to_string(), id.clone()),
        (
            headers::FHIR_INTERACTION.to_string(),
            interaction.to_string(),
        ),
    ];
    if let Some(peer) = req.peer_addr() {
        h.push((headers::PEER.to_string(), peer.to_string()));
    }
    if deleted {
        h.push((headers::FHIR_DELETED.to_string(), "true".into()));
    }
    Write {
        topic: topic_for(&t),
        resource_type: t,
        id,
        record: Record {
            timestamp_ms: now_ms(),
            headers: h,
            content_type: headers::CONTENT_TYPE_FHIR.to_string(),
            payload: serde_json::to_vec(&Value::Object(map.clone())).unwrap_or_default(),
        },
    }
}

/// Check the caller may write `map` (its type, and its patient under a
/// patient-context token).
fn authorize_write(
    ctx: &Ctx,
    req: &HttpRequest,
    map: &Map<String, Value>,
) -> Result<(), FhirError> {
    let access = ctx.authorize(req, type_of(map), true)?;
    if !access.permits(map) {
        return Err(super::auth::outside_compartment());
    }
    Ok(())
}

/// The gateway's write lock: held from a write's version check until the
/// view shows the write.
type WriteGuard = tokio::sync::OwnedMutexGuard<()>;

/// Wait for the write lock, at most [`VIEW_WAIT_MAX`]: past that the
/// write is refused (503) instead of queueing without bound behind a
/// stalled one.
async fn lock_writes(ctx: &Ctx) -> Result<WriteGuard, FhirError> {
    tokio::time::timeout(VIEW_WAIT_MAX, ctx.writes.clone().lock_owned())
        .await
        .map_err(|_| {
            FhirError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                format!("another write has not finished within {VIEW_WAIT_MAX:?}: try again later"),
            )
        })
}

/// Refuse a write to `stored` (the version it replaces or deletes) outside
/// the caller's patient compartment: a patient-scoped token may not take
/// over another patient's resource by rewriting its subject.
fn check_stored_compartment(
    ctx: &Ctx,
    req: &HttpRequest,
    t: &str,
    stored: &Stored,
) -> Result<(), FhirError> {
    let access = ctx.authorize(req, t, true)?;
    if matches!(access, Access::All) {
        return Ok(());
    }
    let old = resource::parse_resource(&stored.json)?;
    if access.permits(&old) {
        Ok(())
    } else {
        Err(super::auth::outside_compartment())
    }
}

/// The stored version of `t/id` a write replaces or deletes (`None`: there
/// is none), once the caller may touch it (its patient compartment, checked
/// first so that a 412 tells nothing of another patient's resource) and
/// `if_match`, when given, names its version.
fn replaced_version(
    ctx: &Ctx,
    req: &HttpRequest,
    t: &str,
    id: &str,
    if_match: Option<&str>,
) -> Result<Option<Stored>, FhirError> {
    let stored = ctx.view.get(t, id).map_err(|e| FhirError::storage(&e))?;
    if let Some(s) = &stored {
        check_stored_compartment(ctx, req, t, s)?;
    }
    check_version(if_match, t, id, stored.as_ref().map(|s| s.version))?;
    Ok(stored)
}

/// Write records (and Subscription cursors) atomically, then wait for the
/// view to show them all; returns each record's (topic, offset). When the
/// view takes longer than [`VIEW_WAIT`], the answer goes but `lock` is kept
/// (up to [`VIEW_WAIT_MAX`]), so the next write checks its version against
/// this one.
async fn commit(
    ctx: &Ctx,
    writes: &[Write],
    lock: WriteGuard,
) -> Result<Vec<(String, u64)>, FhirError> {
    let mut w = AtomicWrite::default();
    for x in writes {
        if x.resource_type == "Subscription" {
            let (place, release) = subscription::cursor_changes(&ctx.store, &x.id, &x.record)
                .map_err(|e| FhirError::storage(&e))?;
            w.cursors.extend(place);
            w.released.extend(release);
        }
        w.records.push((x.topic.to_string(), x.record.clone()));
    }
    let written = ctx
        .store
        .write_atomic(w)
        .await
        .map_err(|e| FhirError::storage(&e))?;
    crate::events::FhirResourcesStored {
        records: written.len(),
    }
    .emit(&ctx.metrics);
    // The last offset written to each topic.
    let mut last: Vec<(String, u64)> = Vec::new();
    for (topic, offset) in &written {
        match last.iter_mut().find(|(t, _)| t == topic) {
            Some(entry) => entry.1 = entry.1.max(*offset),
            None => last.push((topic.clone(), *offset)),
        }
    }
    let shown = wait_shown(&ctx.view, &last, VIEW_WAIT).await;
    if !shown {
        let view = ctx.view.clone();
        actix_web::rt::spawn(async move {
            if !wait_shown(&view, &last, VIEW_WAIT_MAX).await {
                tracing::warn!("FHIR view: a gateway write is not indexed after {VIEW_WAIT_MAX:?}; writes go on");
            }
            drop(lock);
        });
    }
    Ok(written)
}

/// Whether the view shows every `(topic, offset)` within `timeout`.
async fn wait_shown(
    view: &super::view::View,
    last: &[(String, u64)],
    timeout: std::time::Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    for (topic, offset) in last {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !view.wait_indexed(topic, *offset, left).await {
            return false;
        }
    }
    true
}

/// The answer to a single-resource write.
fn single_answer(ctx: &Ctx, req: &HttpRequest, w: &Write, status: StatusCode) -> HttpResponse {
    let stored = ctx.view.get(&w.resource_type, &w.id).ok().flatten();
    let base = ctx.base_url(req);
    let mut r = HttpResponse::build(status);
    r.content_type(FHIR_JSON);
    match &stored {
        Some(s) => {
            r.insert_header((
                "Location",
                format!("{base}/{}/{}/_history/{}", w.resource_type, w.id, s.version),
            ));
            r.insert_header(("ETag", s.etag()));
            r.body(s.json.clone())
        }
        None => {
            r.insert_header(("Location", format!("{base}/{}/{}", w.resource_type, w.id)));
            r.body(w.record.payload.clone())
        }
    }
}

/// Check a resource for writing under `interaction`; Subscriptions get
/// their own checks and are set active.
fn prepare(ctx: &Ctx, mut map: Map<String, Value>) -> Result<Map<String, Value>, FhirError> {
    let t = type_of(&map).to_string();
    if resource::NOT_STORABLE.contains(&t.as_str()) {
        return Err(FhirError::not_supported(format!(
            "{t} resources are not stored here{}",
            if t == "Bundle" {
                ": POST a transaction or batch Bundle to the base URL"
            } else {
                ""
            }
        )));
    }
    if t == "Subscription" {
        subscription::check(&mut map)?;
        let id = id_of(&map).unwrap_or_default();
        if !ctx.subscriptions.contains(id) && ctx.subscriptions.len() >= ctx.max_subscriptions {
            return Err(FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too-costly",
                format!(
                    "this server runs at most {} Subscriptions",
                    ctx.max_subscriptions
                ),
            ));
        }
    }
    Ok(map)
}

/// `POST [base]/{type}`: create with a new id.
pub async fn create(
    ctx: web::Data<Ctx>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> HttpResponse {
    tagged(
        "create",
        create_inner(&ctx, &req, &path, body)
            .await
            .unwrap_or_else(|e| e.response()),
    )
}

async fn create_inner(
    ctx: &Ctx,
    req: &HttpRequest,
    t: &str,
    body: web::Payload,
) -> Result<HttpResponse, FhirError> {
    check_type(t)?;
    ctx.authorize(req, t, true)?;
    let body = read_body(ctx, req, body, ctx.max_body).await?;
    let mut map = resource::parse_resource(&body)?;
    if type_of(&map) != t {
        return Err(FhirError::invalid(format!(
            "the body is a {} but the URL names {t}",
            type_of(&map)
        )));
    }
    resource::set_id(&mut map, &resource::new_id());
    let map = prepare(ctx, map)?;
    authorize_write(ctx, req, &map)?;
    let w = record_for(req, &map, "create", false);
    let lock = lock_writes(ctx).await?;
    commit(ctx, std::slice::from_ref(&w), lock).await?;
    Ok(single_answer(ctx, req, &w, StatusCode::CREATED))
}

/// The request's `If-Match` header, if any.
fn if_match_header(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("if-match")
        .map(|v| v.to_str().unwrap_or_default())
}

/// Refuse with 412 unless `if_match` (`W/"3"` or `"3"`, from the header or
/// a Bundle entry's `request.ifMatch`; `None`: no condition) names the
/// `current` version of `t/id` (`None`: there is none).
fn check_version(
    if_match: Option<&str>,
    t: &str,
    id: &str,
    current: Option<u64>,
) -> Result<(), FhirError> {
    let Some(text) = if_match.map(str::trim) else {
        return Ok(());
    };
    let bare = text.strip_prefix("W/").unwrap_or(text);
    let want: u64 = bare.trim_matches('"').parse().map_err(|_| {
        FhirError::invalid(format!(
            "If-Match {:?} is not a version such as W/\"3\"",
            resource::truncate(text, 40)
        ))
    })?;
    match current {
        Some(have) if want == have => Ok(()),
        Some(have) => Err(FhirError::version_conflict(format!(
            "If-Match names version {want} of {t}/{id}, but the current version is {have}"
        ))),
        None => Err(FhirError::version_conflict(format!(
            "If-Match names version {want} of {t}/{id}, which does not exist"
        ))),
    }
}

/// `PUT [base]/{type}/{id}`: update, or create with the client's id.
pub async fn update(
    ctx: web::Data<Ctx>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    tagged(
        "update",
        update_inner(&ctx, &req, &t, &id, body)
            .await
            .unwrap_or_else(|e| e.response()),
    )
}

async fn update_inner(
    ctx: &Ctx,
    req: &HttpRequest,
    t: &str,
    id: &str,
    body: web::Payload,
) -> Result<HttpResponse, FhirError> {
    check_type(t)?;
    check_id(id)?;
    ctx.authorize(req, t, true)?;
    let body = read_body(ctx, req, body, ctx.max_body).await?;
    let map = resource::parse_resource(&body)?;
    if type_of(&map) != t {
        return Err(FhirError::invalid(format!(
            "the body is a {} but the URL names {t}",
            type_of(&map)
        )));
    }
    match id_of(&map) {
        Some(body_id) if body_id == id => {}
        Some(_) => {
            return Err(FhirError::invalid(
                "the id in the body differs from the id in the URL",
            ))
        }
        None => {
            return Err(FhirError::invalid(
                "an update needs the resource's id in the body, equal to the id in the URL",
            ))
        }
    }
    let map = prepare(ctx, map)?;
    authorize_write(ctx, req, &map)?;
    let lock = lock_writes(ctx).await?;
    let existed = replaced_version(ctx, req, t, id, if_match_header(req))?.is_some();
    let w = record_for(req, &map, "update", false);
    commit(ctx, std::slice::from_ref(&w), lock).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(single_answer(ctx, req, &w, status))
}

/// `DELETE [base]/{type}/{id}`: a delete record; the view and the
/// subscription manager drop the resource.
pub async fn delete(
    ctx: web::Data<Ctx>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    tagged(
        "delete",
        delete_inner(&ctx, &req, &t, &id)
            .await
            .unwrap_or_else(|e| e.response()),
    )
}

async fn delete_inner(
    ctx: &Ctx,
    req: &HttpRequest,
    t: &str,
    id: &str,
) -> Result<HttpResponse, FhirError> {
    // Refused requests do not wait for the write lock.
    check_type(t)?;
    check_id(id)?;
    ctx.authorize(req, t, true)?;
    let lock = lock_writes(ctx).await?;
    let e = delete_entry(ctx, req, &format!("{t}/{id}"), if_match_header(req))?;
    if e.write == EntryWrite::Delete {
        let w = record_for(req, &e.map, "delete", true);
        commit(ctx, std::slice::from_ref(&w), lock).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `POST [base]`: a transaction or batch Bundle.
pub async fn bundle(ctx: web::Data<Ctx>, req: HttpRequest, body: web::Payload) -> HttpResponse {
    match bundle_inner(&ctx, &req, body).await {
        Ok((kind, r)) => tagged(kind, r),
        Err(e) => tagged("transaction", e.response()),
    }
}

/// One entry, checked: the resource with its final id, and the status it
/// will answer with.
struct Entry {
    map: Map<String, Value>,
    status: StatusCode,
    /// What it writes: nothing (a DELETE of what is not there), the
    /// resource, or its deletion.
    write: EntryWrite,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryWrite {
    Nothing,
    Resource,
    Delete,
}

async fn bundle_inner(
    ctx: &Ctx,
    req: &HttpRequest,
    body: web::Payload,
) -> Result<(&'static str, HttpResponse), FhirError> {
    // The token must be valid before anything is parsed; each entry's type
    // is checked against its scopes below.
    ctx.authenticate(req)?;
    let body = read_body(ctx, req, body, ctx.max_body).await?;
    let bundle = resource::parse_resource(&body)?;
    if type_of(&bundle) != "Bundle" {
        return Err(FhirError::invalid(format!(
            "POST to the base URL takes a transaction or batch Bundle, not a {}",
            type_of(&bundle)
        )));
    }
    let kind = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => "transaction",
        Some("batch") => "batch",
        other => {
            return Err(FhirError::invalid(format!(
                "Bundle.type must be \"transaction\" or \"batch\", not {:?}",
                other.map(|o| resource::truncate(o, 40))
            )))
        }
    };
    let entries = match bundle.get("entry") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(FhirError::invalid("Bundle.entry must be an array")),
    };
    if entries.len() > MAX_BUNDLE_ENTRIES {
        return Err(FhirError::invalid(format!(
            "the Bundle has {} entries; this server takes at most {MAX_BUNDLE_ENTRIES}",
            entries.len()
        )));
    }
    let lock = lock_writes(ctx).await?;
    let mut checked: Vec<Result<Entry, FhirError>> = Vec::new();
    let mut renames: HashMap<String, String> = HashMap::new();
    // FHIR: one Bundle may not change one resource twice.
    let mut targets: HashSet<(String, String)> = HashSet::new();
    for (i, e) in entries.into_iter().enumerate() {
        let r = check_entry(ctx, req, e, &mut renames)
            .and_then(|entry| {
                if entry.write == EntryWrite::Nothing {
                    return Ok(entry);
                }
                let target = (
                    type_of(&entry.map).to_string(),
                    id_of(&entry.map).unwrap_or_default().to_string(),
                );
                if targets.contains(&target) {
                    return Err(FhirError::invalid(format!(
                        "{}/{} is changed by an earlier entry: a Bundle may change a resource once",
                        target.0, target.1
                    )));
                }
                targets.insert(target);
                Ok(entry)
            })
            .map_err(|err| FhirError {
                diagnostics: format!("entry[{i}]: {}", err.diagnostics),
                ..err
            });
        if kind == "transaction" {
            if let Err(err) = r {
                return Err(err);
            }
        }
        checked.push(r);
    }
    if kind == "transaction" && !renames.is_empty() {
        for e in checked.iter_mut().flatten() {
            let mut v = Value::Object(std::mem::take(&mut e.map));
            rewrite_references(&mut v, &renames);
            if let Value::Object(m) = v {
                e.map = m;
            }
        }
    }
    let interaction = kind;
    let writes: Vec<Write> = checked
        .iter()
        .flatten()
        .filter(|e| e.write != EntryWrite::Nothing)
        .map(|e| record_for(req, &e.map, interaction, e.write == EntryWrite::Delete))
        .collect();
    if !writes.is_empty() {
        commit(ctx, &writes, lock).await?;
    }
    let base = ctx.base_url(req);
    let mut out = Vec::new();
    let mut written = writes.iter();
    for r in &checked {
        match r {
            Ok(e) if e.write == EntryWrite::Nothing => out.push(json!({
                "response": {"status": "204 No Content"},
            })),
            Ok(e) if e.write == EntryWrite::Delete => {
                written.next();
                out.push(json!({"response": {"status": format!("{} {}", e.status.as_u16(), e.status.canonical_reason().unwrap_or(""))}}));
            }
            Ok(e) => {
                let Some(w) = written.next() else { continue };
                let stored = ctx.view.get(&w.resource_type, &w.id).ok().flatten();
                let mut response = json!({
                    "status": format!("{} {}", e.status.as_u16(), e.status.canonical_reason().unwrap_or("")),
                    "location": format!("{}/{}", w.resource_type, w.id),
                });
                if let Some(s) = stored {
                    response["location"] =
                        json!(format!("{}/{}/_history/{}", w.resource_type, w.id, s.version));
                    response["etag"] = json!(s.etag());
                    response["lastModified"] = json!(resource::instant(s.updated_ms));
                }
                out.push(json!({
                    "fullUrl": format!("{base}/{}/{}", w.resource_type, w.id),
                    "response": response,
                }));
            }
            Err(err) => out.push(json!({
                "response": {
                    "status": format!("{} {}", err.status.as_u16(), err.status.canonical_reason().unwrap_or("")),
                    "outcome": err.outcome(),
                }
            })),
        }
    }
    let mut answer = json!({
        "resourceType": "Bundle",
        "id": resource::new_id(),
        "type": format!("{kind}-response"),
    });
    if !out.is_empty() {
        answer["entry"] = Value::Array(out);
    }
    Ok((
        kind,
        HttpResponse::Ok()
            .content_type(FHIR_JSON)
            .body(answer.to_string()),
    ))
}

/// Check one Bundle entry and give it its final id.
fn check_entry(
    ctx: &Ctx,
    req: &HttpRequest,
    e: Value,
    renames: &mut HashMap<String, String>,
) -> Result<Entry, FhirError> {
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    let method = e
        .get("request")
        .and_then(|r| r.get("method"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let url = e
        .get("request")
        .and_then(|r| r.get("url"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let if_match = match e.get("request").and_then(|r| r.get("ifMatch")) {
        None => None,
        Some(Value::String(v)) => Some(v.clone()),
        Some(_) => {
            return Err(FhirError::invalid(
                "request.ifMatch must be a string such as W/\"3\"",
            ))
        }
    };
    if method == "DELETE" {
        return delete_entry(ctx, req, &url, if_match.as_deref());
    }
    let Some(r) = e.get("resource").cloned() else {
        return Err(FhirError::invalid("the entry has no resource"));
    };
    let mut map = resource::into_resource(r)?;
    let t = type_of(&map).to_string();
    let path = url.split('?').next().unwrap_or("");
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let url_type = parts.next().unwrap_or("");
    let url_id = parts.next();
    if url_type != t {
        return Err(FhirError::invalid(format!(
            "request.url must name the resource's type {t}"
        )));
    }
    if t == "Subscription" {
        return Err(FhirError::not_supported(
            "create Subscriptions with POST [base]/Subscription, not in a Bundle",
        ));
    }
    let status = match (method.as_str(), url_id) {
        ("POST", None) => {
            let id = resource::new_id();
            if let Some(f) =
                full_url.filter(|f| f.starts_with("urn:uuid:") || f.starts_with("urn:oid:"))
            {
                renames.insert(f, format!("{t}/{id}"));
            }
            resource::set_id(&mut map, &id);
            StatusCode::CREATED
        }
        ("PUT", Some(id)) => {
            check_id(id)?;
            match id_of(&map) {
                Some(b) if b == id => {}
                _ => {
                    return Err(FhirError::invalid(
                        "a PUT entry's resource must carry the id named in request.url",
                    ))
                }
            }
            if let Some(f) = full_url.filter(|f| f.starts_with("urn:")) {
                renames.insert(f, format!("{t}/{id}"));
            }
            if replaced_version(ctx, req, &t, id, if_match.as_deref())?.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            }
        }
        _ => {
            return Err(FhirError::not_supported(
                "entries must be POST {type}, PUT {type}/{id} or DELETE {type}/{id}",
            ))
        }
    };
    let map = prepare(ctx, map)?;
    authorize_write(ctx, req, &map)?;
    Ok(Entry {
        map,
        status,
        write: EntryWrite::Resource,
    })
}

/// A `DELETE {type}/{id}` entry: the stored resource to delete, or nothing
/// to write when it is not there (FHIR: deleting is idempotent).
fn delete_entry(
    ctx: &Ctx,
    req: &HttpRequest,
    url: &str,
    if_match: Option<&str>,
) -> Result<Entry, FhirError> {
    let path = url.split('?').next().unwrap_or("");
    let Some((t, id)) = path.trim_start_matches('/').split_once('/') else {
        return Err(FhirError::invalid(
            "a DELETE entry's request.url is {type}/{id}",
        ));
    };
    check_type(t)?;
    check_id(id)?;
    // The write scope, whether or not there is anything to delete.
    ctx.authorize(req, t, true)?;
    let Some(old) = replaced_version(ctx, req, t, id, if_match)? else {
        return Ok(Entry {
            map: Map::new(),
            status: StatusCode::NO_CONTENT,
            write: EntryWrite::Nothing,
        });
    };
    Ok(Entry {
        map: resource::parse_resource(&old.json)?,
        status: StatusCode::NO_CONTENT,
        write: EntryWrite::Delete,
    })
}

/// Replace references to a transaction's temporary `urn:uuid:` full URLs by
/// the ids given to them.
fn rewrite_references(v: &mut Value, renames: &HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "reference" {
                    if let Value::String(s) = x {
                        if let Some(n) = renames.get(s.as_str()) {
                            *s = n.clone();
                        }
                    }
                } else {
                    rewrite_references(x, renames);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_references(x, renames)),
        _ => {}
    }
}
