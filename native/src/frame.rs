//! Whole plain frames (`0|tr_id|count|payload`) straight to `Record`s: the common case of
//! `FrameDecoder.decode` in producer/frames.py without a Python step per frame.
//!
//! `FrameCore.decode` returns None ("fall back") for everything but a plain frame of a
//! known TR at its catalogue width whose every value is plainly regular and whose every
//! record has its symbol: encrypted frames, drift, errors and oddities all go to the
//! Python path, which keeps the counters, logs and exact error reasons. It calls the
//! business-date callable exactly when and as often as the Python path would, only once
//! it knows it will not fall back, and lets its exceptions through (the caller turns them
//! into the same `internal` error as the Python path).

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::decode::{RecordLayout, Value};

const DAY_MS: i64 = 86_400_000;
const KST_OFFSET_MS: i64 = 9 * 3_600_000;

struct Plan {
    canonical: Py<PyString>,
    venue: Py<PyString>,
    layout: RecordLayout,
    symbol: usize,
    time: Option<usize>,
    date: Option<usize>,
}

type PlanSpec<'py> = (
    Vec<String>,
    Bound<'py, PyString>,
    Bound<'py, PyString>,
    usize,
    Vec<(Bound<'py, PyString>, usize, String)>,
    Vec<Bound<'py, PyString>>,
    String,
    Option<String>,
    Option<String>,
);

#[pyclass(frozen, module = "kis_native")]
pub struct FrameCore {
    plans: Vec<Plan>,
    by_tr_id: HashMap<String, usize>,
    record_type: Py<PyAny>,
    business_day: Py<PyAny>,
}

fn frame_text<'a>(raw: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    if let Ok(text) = raw.cast::<PyString>() {
        return text.to_str().ok();
    }
    if let Ok(data) = raw.cast::<PyBytes>() {
        return std::str::from_utf8(data.as_bytes()).ok();
    }
    None
}

#[pymethods]
impl FrameCore {
    /// `plans`: per TR (tr_ids, canonical tr_id, venue, catalogue width, columns as for
    /// RecordLayout, missing columns, symbol column, time column, date column);
    /// `record_type(tr_id, venue, symbol, event_time, received_at, session, seq, index,
    /// fields, extra)` builds a record; `business_day()` gives days since 1970-01-01.
    #[new]
    fn new(
        py: Python<'_>,
        plans: Vec<PlanSpec<'_>>,
        record_type: Py<PyAny>,
        business_day: Py<PyAny>,
    ) -> PyResult<Self> {
        let mut out = Vec::with_capacity(plans.len());
        let mut by_tr_id = HashMap::new();
        for (tr_ids, canonical, venue, width, columns, missing, symbol, time, date) in plans {
            let layout = RecordLayout::build(py, width, columns, missing)?;
            let find = |name: &str| {
                layout.column_index(py, name).ok_or_else(|| {
                    pyo3::exceptions::PyValueError::new_err(format!("no column {name:?}"))
                })
            };
            let symbol = find(&symbol)?;
            if !layout.is_string_column(symbol) {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "symbol must be a string",
                ));
            }
            let time = time.as_deref().map(find).transpose()?;
            let date = date.as_deref().map(find).transpose()?;
            for tr_id in tr_ids {
                by_tr_id.insert(tr_id, out.len());
            }
            out.push(Plan {
                canonical: canonical.unbind(),
                venue: venue.unbind(),
                layout,
                symbol,
                time,
                date,
            });
        }
        Ok(FrameCore {
            plans: out,
            by_tr_id,
            record_type,
            business_day,
        })
    }

    /// The frame's records, or None to let the Python path decode it.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        raw: &Bound<'py, PyAny>,
        received_at: &Bound<'py, PyAny>,
        session: &Bound<'py, PyAny>,
        seq: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(text) = frame_text(raw) else {
            return Ok(None);
        };
        let mut header = text.splitn(4, '|');
        let (Some("0"), Some(tr_id), Some(count_text), Some(payload)) =
            (header.next(), header.next(), header.next(), header.next())
        else {
            return Ok(None);
        };
        let Some(&plan_index) = self.by_tr_id.get(tr_id) else {
            return Ok(None);
        };
        if count_text.is_empty()
            || count_text.len() > 4
            || !count_text.bytes().all(|c| c.is_ascii_digit())
        {
            return Ok(None);
        }
        let count: usize = count_text.parse().unwrap_or(0);
        let plan = &self.plans[plan_index];
        let layout = &plan.layout;
        let Some(values) = layout.type_payload(payload, count) else {
            return Ok(None);
        };
        let per_record = layout.columns_len();
        for r in 0..count {
            if matches!(values[r * per_record + plan.symbol], Value::Null) {
                return Ok(None); // no_symbol: the Python path words the error
            }
        }
        // From here on the frame decodes here: call business_day() as the Python path does.
        let business_day = self.business_day.bind(py);
        let frame_day: Option<i64> = if plan.time.is_some() && plan.date.is_none() {
            Some(business_day.call0()?.extract()?)
        } else {
            None
        };
        let records = PyList::empty(py);
        let none = py.None().into_bound(py);
        let record_type = self.record_type.bind(py);
        let mut objects = Vec::with_capacity(per_record);
        for r in 0..count {
            let chunk = &values[r * per_record..(r + 1) * per_record];
            let fields = layout.record_dict(py, chunk, &mut objects)?;
            let symbol = objects[plan.symbol].clone().unwrap_or_else(|| none.clone());
            let mut event_time = none.clone();
            if let Some(Value::Long(t)) = plan.time.map(|i| &chunk[i]) {
                let day = match (frame_day, plan.date.map(|i| &chunk[i])) {
                    (Some(day), _) => day,
                    (None, Some(Value::Long(day))) => *day,
                    _ => business_day.call0()?.extract()?,
                };
                event_time = (day * DAY_MS + t - KST_OFFSET_MS)
                    .into_pyobject(py)?
                    .into_any();
            }
            let args = PyTuple::new(
                py,
                [
                    plan.canonical.bind(py).clone().into_any(),
                    plan.venue.bind(py).clone().into_any(),
                    symbol,
                    event_time,
                    received_at.clone(),
                    session.clone(),
                    seq.clone(),
                    r.into_pyobject(py)?.into_any(),
                    fields.into_any(),
                    none.clone(),
                ],
            )?;
            records.append(record_type.call1(args)?)?;
        }
        Ok(Some(records))
    }
}
