//! Whole plain frames (`0|tr_id|count|payload`) straight to records: the common case of
//! `FrameDecoder.decode` in producer/frames.py without a Python step per frame.
//!
//! `FrameCore.decode` returns None ("fall back") for everything but a plain frame of a
//! known TR at its catalogue width whose every value is plainly regular and whose every
//! record has its symbol: encrypted frames (see `decode_payload`), drift, errors and
//! oddities all go to the Python path, which keeps the counters, logs and exact error
//! reasons. It calls the business-date callable exactly when and as often as the Python
//! path would, only once it knows it will not fall back, and lets its exceptions through
//! (the caller turns them into the same `internal` error as the Python path).
//!
//! Every field is split, parsed and validated here before any record is made; the records
//! (`kis_native.Record`, record.rs) keep the typed values in Rust and make their `fields`
//! dict only when asked.

use std::collections::HashMap;

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyType};

use crate::decode::{RecordLayout, Stored, Value};
use crate::record::{Frame, NativeRecord, Shape};

const DAY_MS: i64 = 86_400_000;
const KST_OFFSET_MS: i64 = 9 * 3_600_000;

struct Plan {
    shape: Arc<Shape>,
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
    /// `record_type`: producer.records.Record (native records compare equal to its
    /// instances); `business_day()` gives days since 1970-01-01.
    #[new]
    fn new(
        py: Python<'_>,
        plans: Vec<PlanSpec<'_>>,
        record_type: Bound<'_, PyType>,
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
                shape: Arc::new(Shape {
                    canonical_text: canonical.to_str()?.to_owned(),
                    canonical: canonical.unbind(),
                    venue_text: venue.to_str()?.to_owned(),
                    venue: venue.unbind(),
                    layout,
                    symbol,
                    py_record: record_type.clone().unbind(),
                }),
                time,
                date,
            });
        }
        Ok(FrameCore {
            plans: out,
            by_tr_id,
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
        self.records(py, plan_index, payload, count, received_at, session, seq)
    }

    /// The records of a (decrypted) payload of `count` records of TR `tr_id`, or None to
    /// let the Python path decode it: what `decode` does after the frame header.
    #[allow(clippy::too_many_arguments)]
    fn decode_payload<'py>(
        &self,
        py: Python<'py>,
        tr_id: &str,
        payload: &Bound<'py, PyAny>,
        count: usize,
        received_at: &Bound<'py, PyAny>,
        session: &Bound<'py, PyAny>,
        seq: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(&plan_index) = self.by_tr_id.get(tr_id) else {
            return Ok(None);
        };
        let Some(text) = payload.cast::<PyString>().ok().and_then(|p| p.to_str().ok()) else {
            return Ok(None);
        };
        self.records(py, plan_index, text, count, received_at, session, seq)
    }
}

impl FrameCore {
    #[allow(clippy::too_many_arguments)]
    fn records<'py>(
        &self,
        py: Python<'py>,
        plan_index: usize,
        payload: &str,
        count: usize,
        received_at: &Bound<'py, PyAny>,
        session: &Bound<'py, PyAny>,
        seq: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let plan = &self.plans[plan_index];
        let shape = &plan.shape;
        let layout = &shape.layout;
        if payload.len() > u32::MAX as usize {
            return Ok(None); // text ranges are 32-bit
        }
        let Some(values) = layout.type_payload(payload, count) else {
            return Ok(None);
        };
        let per_record = layout.columns_len();
        for r in 0..count {
            if matches!(values[r * per_record + shape.symbol], Value::Null) {
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
        let mut event_times = Vec::with_capacity(count);
        for r in 0..count {
            let chunk = &values[r * per_record..(r + 1) * per_record];
            let mut event_time = None;
            if let Some(Value::Long(t)) = plan.time.map(|i| &chunk[i]) {
                let day = match (frame_day, plan.date.map(|i| &chunk[i])) {
                    (Some(day), _) => day,
                    (None, Some(Value::Long(day))) => *day,
                    _ => business_day.call0()?.extract()?,
                };
                // Days of a datetime.date (years 1-9999): far inside 64 bits.
                event_time = Some(day * DAY_MS + t - KST_OFFSET_MS);
            }
            event_times.push(event_time);
        }
        let frame = Arc::new(Frame {
            values: values.iter().map(|v| Stored::of(v, payload)).collect(),
            payload: payload.into(),
            per_record,
            received_at: received_at.clone().unbind(),
            session: session.clone().unbind(),
            seq: seq.clone().unbind(),
        });
        let records = PyList::empty(py);
        for (index, event_time) in event_times.into_iter().enumerate() {
            let record = NativeRecord {
                shape: Arc::clone(shape),
                frame: Arc::clone(&frame),
                index,
                event_time,
                fields: PyOnceLock::new(),
            };
            records.append(Bound::new(py, record)?)?;
        }
        Ok(Some(records))
    }
}
