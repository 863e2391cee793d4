//! Reads: `GET [base]/{type}/{id}` and `GET [base]/{type}?…` from the
//! current-state view.
//!
//! Search parameters: `_id`, `identifier` (`system|value`, `value`,
//! `|value`), `patient` (patient-compartment types; `123` or
//! `Patient/123`), `_count`, and `_after` (the paging position this server
//! writes into `next` links). A parameter it does not support is refused
//! with 400 rather than ignored: a silently ignored filter would return
//! other patients' data.

use super::auth::Access;
use super::outcome::{FhirError, FHIR_JSON};
use super::resource::{self, check_id, check_type};
use super::view::{Index, Stored};
use super::{tagged, Ctx};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// Most index entries one search request examines: bounds the cost of a
/// page whose filters match rarely (the `next` link continues from there).
pub const MAX_SCAN: usize = 10_000;
/// Index entries fetched per storage call while filling a page.
const SCAN_CHUNK: usize = 256;
/// Parameters accepted and ignored (formatting hints).
const IGNORED: [&str; 2] = ["_format", "_pretty"];

/// `GET [base]/{type}/{id}`.
pub async fn read(
    ctx: web::Data<Ctx>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    tagged(
        "read",
        read_inner(&ctx, &req, &t, &id).unwrap_or_else(|e| e.response()),
    )
}

fn read_inner(ctx: &Ctx, req: &HttpRequest, t: &str, id: &str) -> Result<HttpResponse, FhirError> {
    read_version(ctx, req, t, id, None)
}

/// `GET [base]/{type}/{id}/_history/{vid}`: this server keeps the current
/// version only (the one its `Location` and `ETag` headers name); an older
/// one is 404.
pub async fn vread(
    ctx: web::Data<Ctx>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (t, id, vid) = path.into_inner();
    let answer = match vid.parse::<u64>() {
        Ok(v) => read_version(&ctx, &req, &t, &id, Some(v)),
        Err(_) => Err(FhirError::invalid(format!(
            "version {:?} is not a version id (1, 2, …)",
            resource::truncate(&vid, 40)
        ))),
    };
    tagged("vread", answer.unwrap_or_else(|e| e.response()))
}

/// The current version of `t/id`, when `version` is it (or not given).
fn read_version(
    ctx: &Ctx,
    req: &HttpRequest,
    t: &str,
    id: &str,
    version: Option<u64>,
) -> Result<HttpResponse, FhirError> {
    check_type(t)?;
    check_id(id)?;
    let access = ctx.authorize(req, t, false)?;
    let Some(s) = ctx.view.get(t, id).map_err(|e| FhirError::storage(&e))? else {
        // A deleted resource's compartment is no longer known: only a
        // caller who may read every resource of the type learns it existed.
        let deleted = match access {
            Access::All => ctx
                .view
                .deleted(t, id)
                .map_err(|e| FhirError::storage(&e))?,
            Access::Patient(_) => None,
        };
        return Err(match deleted {
            Some(v) => FhirError::gone(format!("{t}/{id} was deleted (version {v})")),
            None => FhirError::not_found(format!("{t}/{id} is not known")),
        });
    };
    if !permits(&access, &s) {
        return Err(super::auth::outside_compartment());
    }
    if let Some(v) = version.filter(|v| *v != s.version) {
        return Err(FhirError::not_found(format!(
            "version {v} of {t}/{id} is not kept: this server keeps the current version only ({})",
            s.version
        )));
    }
    let etag = s.etag();
    let matches = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == etag || v.trim().trim_matches('"') == s.version.to_string());
    if matches {
        return Ok(HttpResponse::NotModified()
            .insert_header(("ETag", etag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .insert_header(("ETag", etag))
        .insert_header(("Last-Modified", http_date(s.updated_ms)))
        .body(s.json))
}

fn permits(access: &Access, s: &Stored) -> bool {
    match access {
        Access::All => true,
        Access::Patient(_) => resource::parse_resource(&s.json)
            .map(|m| access.permits(&m))
            .unwrap_or(false),
    }
}

/// An RFC 7231 date for `Last-Modified`.
fn http_date(ms: u64) -> String {
    httpdate_from_instant(&resource::instant(ms), ms)
}

fn httpdate_from_instant(instant: &str, ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = DAYS[((ms / 86_400_000) % 7) as usize];
    let y = instant.get(0..4).unwrap_or("1970");
    let m: usize = instant.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    let d = instant.get(8..10).unwrap_or("01");
    let time = instant.get(11..19).unwrap_or("00:00:00");
    let month = MONTHS.get(m.saturating_sub(1)).copied().unwrap_or("Jan");
    format!("{day}, {d} {month} {y} {time} GMT")
}

/// A parsed search.
#[derive(Clone)]
struct Search {
    id: Option<String>,
    identifier: Option<String>,
    patient: Option<String>,
    count: usize,
    after: Option<String>,
}

fn parse_search(ctx: &Ctx, t: &str, params: &[(String, String)]) -> Result<Search, FhirError> {
    let mut s = Search {
        id: None,
        identifier: None,
        patient: None,
        count: ctx.page_size,
        after: None,
    };
    for (k, v) in params {
        match k.as_str() {
            "_id" => {
                check_id(v)?;
                s.id = Some(v.clone());
            }
            "identifier" => {
                if v.is_empty() {
                    return Err(FhirError::invalid("identifier needs a value"));
                }
                s.identifier = Some(resource::one_value(k, v).map_err(FhirError::invalid)?);
            }
            "patient" => {
                if resource::patient_paths(t).is_none() {
                    return Err(FhirError::not_supported(format!(
                        "{t} is not in the patient compartment: the patient parameter does not apply"
                    )));
                }
                let id = v.strip_prefix("Patient/").unwrap_or(v);
                check_id(id)?;
                s.patient = Some(id.to_string());
            }
            "_count" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| FhirError::invalid("_count must be a whole number"))?;
                // 0: the number of matches only (no entries).
                s.count = n.min(ctx.max_page_size);
            }
            "_after" => {
                check_id(v)?;
                s.after = Some(v.clone());
            }
            k if IGNORED.contains(&k) => {}
            other => {
                return Err(FhirError::not_supported(format!(
                    "search parameter {:?} is not supported for {t} (supported: _id, identifier, patient, _count)",
                    resource::truncate(other, 64)
                )))
            }
        }
    }
    Ok(s)
}

/// `GET [base]/{type}?…`.
pub async fn search(
    ctx: web::Data<Ctx>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    tagged(
        "search-type",
        search_inner(&ctx, &req, &path).unwrap_or_else(|e| e.response()),
    )
}

fn search_inner(ctx: &Ctx, req: &HttpRequest, t: &str) -> Result<HttpResponse, FhirError> {
    check_type(t)?;
    let access = ctx.authorize(req, t, false)?;
    let params = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| FhirError::invalid(format!("bad query string: {e}")))?
        .into_inner();
    let mut s = parse_search(ctx, t, &params)?;
    if let Access::Patient(p) = &access {
        // A patient-context token sees its own patient's compartment only.
        if t == "Patient" {
            if s.id.as_ref().is_some_and(|id| id != p) {
                return Err(super::auth::outside_compartment());
            }
            s.id = Some(p.clone());
        } else if resource::patient_paths(t).is_some() {
            if s.patient.as_ref().is_some_and(|x| x != p) {
                return Err(super::auth::outside_compartment());
            }
            s.patient = Some(p.clone());
        }
    }
    let count_only = s.count == 0;
    let (found, next) = if count_only {
        // Every match within one request's scan budget, for the total.
        let all = Search {
            count: usize::MAX,
            ..s.clone()
        };
        run_search(ctx, t, &all)
    } else {
        run_search(ctx, t, &s)
    }
    .map_err(|e| FhirError::storage(&e))?;
    let mut found: Vec<(String, Stored)> = found
        .into_iter()
        .filter(|(_, x)| permits(&access, x))
        .collect();
    // Past the scan budget the total is not known, and is left out.
    let total = (next.is_none() && s.after.is_none()).then_some(found.len());
    let next = if count_only {
        found.clear();
        None
    } else {
        next
    };
    let base = ctx.base_url(req);
    let kept: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "_after" && k != "_count")
        .cloned()
        .chain(std::iter::once(("_count".to_string(), s.count.to_string())))
        .collect();
    let url = |extra: Option<&str>| {
        let mut q: Vec<(String, String)> = kept.clone();
        if let Some(a) = extra {
            q.push(("_after".into(), a.to_string()));
        }
        let qs = q
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        format!("{base}/{t}?{qs}")
    };
    let mut links = vec![json!({"relation": "self", "url": url(s.after.as_deref())})];
    if let Some(n) = &next {
        links.push(json!({"relation": "next", "url": url(Some(n))}));
    }
    let entries: Vec<Value> = found
        .iter()
        .filter_map(|(id, st)| {
            let r: Value = serde_json::from_slice(&st.json).ok()?;
            Some(json!({
                "fullUrl": format!("{base}/{t}/{id}"),
                "resource": r,
                "search": {"mode": "match"},
            }))
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": resource::new_id(),
        "meta": {"lastUpdated": resource::instant(crate::storage::now_ms())},
        "type": "searchset",
        "link": links,
    });
    if let Some(total) = total {
        bundle["total"] = json!(total);
    }
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(bundle.to_string()))
}

/// Percent-encode a query component.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a stored resource meets the search's filters (those not used to
/// walk an index).
fn meets(s: &Search, st: &Stored) -> bool {
    if s.identifier.is_none() && s.patient.is_none() {
        return true;
    }
    let Ok(m) = resource::parse_resource(&st.json) else {
        return false;
    };
    if let Some(p) = &s.patient {
        if !resource::patients(&m).iter().any(|x| x == p) {
            return false;
        }
    }
    if let Some(want) = &s.identifier {
        let ids = resource::identifiers(&m);
        let hit = match want.split_once('|') {
            Some((system, value)) => ids.iter().any(|(s, v)| s == system && v == value),
            None => ids.iter().any(|(_, v)| v == want),
        };
        if !hit {
            return false;
        }
    }
    true
}

/// One page of matches and the `_after` of the next page, if any.
type Page = (Vec<(String, Stored)>, Option<String>);

fn run_search(ctx: &Ctx, t: &str, s: &Search) -> Result<Page, crate::storage::StorageError> {
    if let Some(id) = &s.id {
        if s.after.is_some() {
            return Ok((Vec::new(), None));
        }
        let hit = ctx
            .view
            .get(t, id)?
            .filter(|st| meets(s, st))
            .map(|st| (id.clone(), st));
        return Ok((hit.into_iter().collect(), None));
    }
    let mut out: Vec<(String, Stored)> = Vec::new();
    let mut after = s.after.clone();
    let mut scanned = 0usize;
    loop {
        // (id, resource) candidates in id order.
        let chunk: Vec<(String, Option<Stored>)> = if let Some(p) = &s.patient {
            ids_with(ctx, t, Index::Patient, p, after.as_deref())?
        } else if let Some(i) = &s.identifier {
            let (index, value) = if i.contains('|') {
                (Index::SystemValue, i.as_str())
            } else {
                (Index::Value, i.as_str())
            };
            ids_with(ctx, t, index, value, after.as_deref())?
        } else {
            ctx.view.scan_type(t, after.as_deref(), SCAN_CHUNK)?
        };
        let exhausted = chunk.len() < SCAN_CHUNK;
        for (id, st) in chunk {
            scanned += 1;
            after = Some(id.clone());
            let Some(st) = st else { continue };
            if !meets(s, &st) {
                continue;
            }
            if out.len() == s.count {
                // One more match exists: the page is full and has a next.
                let next = out.last().map(|(id, _)| id.clone());
                return Ok((out, next));
            }
            out.push((id, st));
        }
        if exhausted {
            return Ok((out, None));
        }
        if scanned >= MAX_SCAN {
            return Ok((out, after));
        }
    }
}

fn ids_with(
    ctx: &Ctx,
    t: &str,
    index: Index,
    value: &str,
    after: Option<&str>,
) -> Result<Vec<(String, Option<Stored>)>, crate::storage::StorageError> {
    let ids = ctx.view.scan_index(index, t, value, after, SCAN_CHUNK)?;
    ids.into_iter()
        .map(|id| {
            let st = ctx.view.get(t, &id)?;
            Ok((id, st))
        })
        .collect()
}
