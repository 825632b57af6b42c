//! `GET /api/v1/kinds`: every kind of finding the collector knows — its code, category, party
//! and title in English and Simplified Chinese — so that a page holding only a code (the
//! fleet's counts by code, an alert notification's codes) can name it. Static: the same for
//! the collector's whole run.

use std::collections::HashMap;

use axum::extract::Query;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::json;

use crate::http::error::ApiError;
use crate::http::queries::check_parameters;
use posmon_diagnosis::{all_kinds, Category, Party, Text};

#[derive(Serialize)]
struct KindView {
    code: &'static str,
    category: Category,
    party: Party,
    title: Text,
}

pub async fn kinds(
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    check_parameters(&query, &[])?;
    let kinds: Vec<KindView> = all_kinds()
        .map(|kind| KindView {
            code: kind.code,
            category: kind.category,
            party: kind.party,
            title: kind.title,
        })
        .collect();
    Ok(Json(json!({ "kinds": kinds })))
}
