//! The PNG chart of a day's hourly volume by type: one line per type for the busiest types,
//! the rest summed as "other", hours 0-23 on the x axis. Text is drawn with DejaVu Sans Mono,
//! shipped in `assets/` under its own (Bitstream Vera) license.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

use crate::QueryError;
use crate::kpi::{KpiValue, Report};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
const FAMILY: &str = "sans-serif";
/// Types drawn on their own line.
const TOP_TYPES: usize = 8;

fn register_font() -> Result<(), QueryError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).map_err(|_| QueryError::Chart("the shipped font does not load".into()));
    });
    result
}

/// Series of events per hour: the busiest types, then "other".
pub fn hourly_series(report: &Report) -> Vec<(String, [u64; 24])> {
    let Some(KpiValue::Rows(rows)) = report.kpis.get("events_by_type_hour") else { return Vec::new() };
    let mut by_type: BTreeMap<String, [u64; 24]> = BTreeMap::new();
    for r in rows {
        let (Some(Value::String(t)), Some(h), Some(n)) = (r.get("type"), r.get("hour").and_then(Value::as_u64), r.get("events").and_then(Value::as_u64)) else {
            continue;
        };
        if let Some(slot) = by_type.entry(t.clone()).or_insert([0; 24]).get_mut(h as usize) {
            *slot += n;
        }
    }
    let mut all: Vec<(String, [u64; 24])> = by_type.into_iter().collect();
    all.sort_by_key(|(t, h)| (std::cmp::Reverse(h.iter().sum::<u64>()), t.clone()));
    let rest = all.split_off(all.len().min(TOP_TYPES));
    if !rest.is_empty() {
        let mut other = [0u64; 24];
        for (_, h) in &rest {
            for (o, v) in other.iter_mut().zip(h) {
                *o += v;
            }
        }
        all.push((format!("other ({} types)", rest.len()), other));
    }
    all
}

/// Draws the chart into a PNG file.
pub fn draw_hourly(report: &Report, path: &Path) -> Result<(), QueryError> {
    register_font()?;
    let series = hourly_series(report);
    let err = |e: &dyn std::fmt::Display| QueryError::Chart(e.to_string());
    let max = series.iter().flat_map(|(_, h)| h.iter().copied()).max().unwrap_or(0).max(1);
    let root = BitMapBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Events per hour by type, {} (UTC)", report.date), (FAMILY, 26))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(0u32..23u32, 0u64..(max + max / 10 + 1))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("hour of day")
        .y_desc("events")
        .x_labels(24)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, hours)) in series.iter().enumerate() {
        let color = if i == TOP_TYPES { RGBColor(140, 140, 140).to_rgba() } else { Palette99::pick(i).to_rgba() };
        let style = ShapeStyle::from(&color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(hours.iter().enumerate().map(|(h, v)| (h as u32, *v)), style))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], ShapeStyle::from(&color).stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
