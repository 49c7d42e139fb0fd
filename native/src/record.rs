//! `kis_native.Record`: a decoded record whose field values stay in Rust.
//!
//! The decoder has parsed and validated every field before it makes one (see frame.rs);
//! what it defers is only making the Python objects. `fields` builds the same dict as the
//! Python decoder (snake_case -> typed value, None where KIS sent nothing, same key order)
//! on first access and keeps it; the Avro encoder (encode.rs) writes the values straight
//! from Rust while nobody has asked for the dict. The rest of the contract of
//! `producer.records.Record` holds: the same attributes, `==` with either kind of record,
//! the same `repr`; `extra` is always None (frames with extra fields take the Python path).
//! Unlike the dataclass, its attributes are read-only.

use std::sync::Arc;

use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use crate::decode::{RecordLayout, Stored, Value};

/// What every record of one TR shares.
pub struct Shape {
    pub canonical: Py<PyString>,
    pub canonical_text: String,
    pub venue: Py<PyString>,
    pub venue_text: String,
    pub layout: RecordLayout,
    /// Column (index into the layout's columns) of the record's symbol.
    pub symbol: usize,
    /// `producer.records.Record`: a native record compares equal to one of those with the
    /// same attributes.
    pub py_record: Py<PyType>,
}

/// What the records of one frame share: the payload their texts are ranges of, every
/// record's typed values (`per_record` each), and the receive envelope.
pub struct Frame {
    pub payload: Box<str>,
    pub values: Vec<Stored>,
    pub per_record: usize,
    pub received_at: Py<PyAny>,
    pub session: Py<PyAny>,
    pub seq: Py<PyAny>,
}

const ATTRS: [&str; 10] = [
    "tr_id",
    "venue",
    "symbol",
    "event_time",
    "received_at",
    "session",
    "seq",
    "index",
    "fields",
    "extra",
];

#[pyclass(frozen, module = "kis_native", name = "Record")]
pub struct NativeRecord {
    pub shape: Arc<Shape>,
    pub frame: Arc<Frame>,
    pub index: usize,
    pub event_time: Option<i64>,
    pub fields: PyOnceLock<Py<PyDict>>,
}

impl NativeRecord {
    /// This record's typed values, in the layout's column order.
    pub fn values(&self) -> &[Stored] {
        let start = self.index * self.frame.per_record;
        &self.frame.values[start..start + self.frame.per_record]
    }

    pub fn value(&self, stored: &Stored) -> Value<'_> {
        stored.value(&self.frame.payload)
    }

    /// The symbol's text (the decoder only makes records whose symbol is not empty).
    pub fn symbol_text(&self) -> &str {
        match self.value(&self.values()[self.shape.symbol]) {
            Value::Text(text) => text,
            _ => "",
        }
    }

    /// Whether `fields` has been built (a consumer may have changed that dict since).
    pub fn fields_built(&self, py: Python<'_>) -> bool {
        self.fields.get(py).is_some()
    }

    fn fields_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = self.fields.get_or_try_init(py, || {
            let payload = &self.frame.payload;
            self.shape
                .layout
                .record_dict(py, self.values().iter().map(|v| v.value(payload)))
                .map(Bound::unbind)
        })?;
        Ok(dict.bind(py).clone())
    }

    fn attrs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        Ok(vec![
            self.shape.canonical.bind(py).clone().into_any(),
            self.shape.venue.bind(py).clone().into_any(),
            PyString::new(py, self.symbol_text()).into_any(),
            self.event_time.into_pyobject(py)?.into_any(),
            self.frame.received_at.bind(py).clone(),
            self.frame.session.bind(py).clone(),
            self.frame.seq.bind(py).clone(),
            self.index.into_pyobject(py)?.into_any(),
            self.fields_dict(py)?.into_any(),
            py.None().into_bound(py),
        ])
    }
}

#[pymethods]
impl NativeRecord {
    #[getter]
    fn tr_id(&self, py: Python<'_>) -> Py<PyString> {
        self.shape.canonical.clone_ref(py)
    }

    #[getter]
    fn venue(&self, py: Python<'_>) -> Py<PyString> {
        self.shape.venue.clone_ref(py)
    }

    #[getter]
    fn symbol<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, self.symbol_text())
    }

    #[getter]
    fn event_time(&self) -> Option<i64> {
        self.event_time
    }

    #[getter]
    fn received_at(&self, py: Python<'_>) -> Py<PyAny> {
        self.frame.received_at.clone_ref(py)
    }

    #[getter]
    fn session(&self, py: Python<'_>) -> Py<PyAny> {
        self.frame.session.clone_ref(py)
    }

    #[getter]
    fn seq(&self, py: Python<'_>) -> Py<PyAny> {
        self.frame.seq.clone_ref(py)
    }

    #[getter]
    fn index(&self) -> usize {
        self.index
    }

    /// snake_case KIS name -> typed value (None where KIS sent nothing): built on first
    /// access, then the same dict every time.
    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.fields_dict(py)
    }

    #[getter]
    fn extra(&self, py: Python<'_>) -> Py<PyAny> {
        py.None()
    }

    /// The dataclass's repr (`Record(tr_id='H0STCNT0', ..., extra=None)`).
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut out = String::from("Record(");
        for (i, (name, value)) in ATTRS.iter().zip(self.attrs(py)?).enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(name);
            out.push('=');
            out.push_str(value.repr()?.to_str()?);
        }
        out.push(')');
        Ok(out)
    }

    /// As the dataclass: equal when every attribute is, against either kind of record.
    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let comparable = other.cast::<NativeRecord>().is_ok()
            || other.get_type().is(self.shape.py_record.bind(py));
        if !comparable || !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Ok(py.NotImplemented());
        }
        let mine = PyTuple::new(py, self.attrs(py)?)?;
        let theirs = ATTRS
            .iter()
            .map(|name| other.getattr(*name))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(mine
            .rich_compare(PyTuple::new(py, theirs)?, op)?
            .unbind())
    }
}
