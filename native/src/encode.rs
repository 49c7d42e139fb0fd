//! Avro binary for flat record schemas (what `producer/avro.py::compile_encoder` supports):
//! string, bytes, int/long, double, boolean, `["null", T]` of those, and nullable
//! `array<string>`.
//!
//! Type rules follow the Python encoder: only an exact `int` for int/long, `float` or `int`
//! for double, exact `str`/`bytes`; anything else raises TypeError with the same message,
//! a long outside 64 bits raises ValueError, a missing key KeyError.
//!
//! A `kis_native.Record` whose `fields` dict nobody has built is written straight from its
//! typed values in Rust (no dict, no Python object per value); the bytes are the same as
//! through the dict, and anything unexpected (a key order other than the schema's, a type
//! the schema does not take) goes the general way, which gives the same bytes or error.

use pyo3::exceptions::{PyAttributeError, PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::decode::Value;
use crate::record::NativeRecord;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Long,
    Double,
    String,
    Bytes,
    Boolean,
    StringArray,
}

/// Which attribute of a record an envelope field reads.
#[derive(Clone, Copy)]
enum Attr {
    TrId,
    Venue,
    Symbol,
    EventTime,
    ReceivedAt,
    Session,
    Seq,
    Index,
    Extra,
    Other,
}

impl Attr {
    fn named(name: &str) -> Attr {
        match name {
            "tr_id" => Attr::TrId,
            "venue" => Attr::Venue,
            "symbol" => Attr::Symbol,
            "event_time" => Attr::EventTime,
            "received_at" => Attr::ReceivedAt,
            "session" => Attr::Session,
            "seq" => Attr::Seq,
            "index" => Attr::Index,
            "extra" => Attr::Extra,
            _ => Attr::Other,
        }
    }
}

struct Field {
    /// Record attribute (envelope of a `Record`) or key of the datum / `record.fields`.
    name: Py<PyString>,
    from_attr: bool,
    attr: Attr,
    kind: Kind,
    nullable: bool,
}

/// Encoder of one schema; `encode(datum_or_record)` returns header + Avro body.
#[pyclass(frozen, module = "kis_native")]
pub struct Encoder {
    header: Vec<u8>,
    fields: Vec<Field>,
    from_record: bool,
    fields_attr: Py<PyString>,
}

#[inline]
fn put_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n > 0x7F {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[inline]
fn put_str(out: &mut Vec<u8>, text: &str) {
    put_long(out, text.len() as i64);
    out.extend_from_slice(text.as_bytes());
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

fn struct_error(py: Python<'_>) -> PyErr {
    const MESSAGE: &str = "required argument is not a float";
    match py.import("struct").and_then(|m| m.getattr("error")) {
        Ok(class) => match class.cast_into::<pyo3::types::PyType>() {
            Ok(class) => PyErr::from_type(class, MESSAGE),
            Err(_) => PyValueError::new_err(MESSAGE),
        },
        Err(err) => err,
    }
}

fn expected(what: &str, value: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!("expected {what}, got {}", type_name(value)))
}

/// A value a native record holds, if `kind`/`nullable` takes it as the Python encoder
/// would take its Python object; false (nothing written) otherwise.
#[inline]
fn write_typed(out: &mut Vec<u8>, kind: Kind, nullable: bool, value: Value<'_>) -> bool {
    match (value, kind) {
        (Value::Null, _) if nullable => out.push(0),
        (Value::Text(text), Kind::String) => {
            if nullable {
                out.push(2);
            }
            put_str(out, text);
        }
        (Value::Long(n), Kind::Long) => {
            if nullable {
                out.push(2);
            }
            put_long(out, n);
        }
        (Value::Double(x), Kind::Double) => {
            if nullable {
                out.push(2);
            }
            out.extend_from_slice(&x.to_le_bytes());
        }
        _ => return false,
    }
    true
}

fn write_value(
    out: &mut Vec<u8>,
    kind: Kind,
    nullable: bool,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if nullable {
        if value.is_none() {
            out.push(0);
            return Ok(());
        }
        if !matches!(kind, Kind::StringArray) {
            out.push(2);
        }
    }
    match kind {
        Kind::Long => {
            if !value.is_exact_instance_of::<PyInt>() {
                return Err(expected("int", value));
            }
            match value.extract::<i64>() {
                Ok(n) => put_long(out, n),
                Err(_) => {
                    return Err(PyValueError::new_err(format!(
                        "{} is outside the Avro long range",
                        value.str()?
                    )));
                }
            }
        }
        Kind::Double => {
            let number = if value.is_exact_instance_of::<PyFloat>() {
                value.cast::<PyFloat>()?.value()
            } else if value.is_exact_instance_of::<PyInt>() {
                match value.extract::<f64>() {
                    Ok(number) => number,
                    // As struct.pack("<d", int) in the Python encoder.
                    Err(_) => return Err(struct_error(value.py())),
                }
            } else {
                return Err(expected("float", value));
            };
            out.extend_from_slice(&number.to_le_bytes());
        }
        Kind::String => {
            if !value.is_exact_instance_of::<PyString>() {
                return Err(expected("str", value));
            }
            put_str(out, value.cast::<PyString>()?.to_str()?);
        }
        Kind::Bytes => {
            if !value.is_exact_instance_of::<PyBytes>() {
                return Err(expected("bytes", value));
            }
            let data = value.cast::<PyBytes>()?.as_bytes();
            put_long(out, data.len() as i64);
            out.extend_from_slice(data);
        }
        Kind::Boolean => {
            // Exactly True or False, as processors/flat_avro.py's writer takes.
            if !value.is_exact_instance_of::<PyBool>() {
                return Err(PyTypeError::new_err(format!("not a boolean: {}", value.repr()?)));
            }
            out.push(u8::from(value.is_truthy()?));
        }
        Kind::StringArray => {
            // None was handled above (the field is always nullable).
            let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = value.cast::<PyList>() {
                list.iter().collect()
            } else if let Ok(tuple) = value.cast::<PyTuple>() {
                tuple.iter().collect()
            } else {
                return Err(expected("a list of str", value));
            };
            out.push(2);
            if !items.is_empty() {
                put_long(out, items.len() as i64);
                for item in &items {
                    match item.cast::<PyString>() {
                        Ok(text) => put_str(out, text.to_str()?),
                        Err(_) => {
                            return Err(PyAttributeError::new_err(format!(
                                "'{}' object has no attribute 'encode'",
                                type_name(item)
                            )));
                        }
                    }
                }
            }
            out.push(0);
        }
    }
    Ok(())
}

#[pymethods]
impl Encoder {
    /// `fields`: (name, kind, nullable, from_attr) in schema order; kind is one of
    /// long, double, string, bytes, boolean, string_array. `from_attr`: read `record.<name>`
    /// instead of `fields[name]` (with `from_record`, the rest come from `record.fields`).
    #[new]
    fn new(
        py: Python<'_>,
        header: &[u8],
        fields: Vec<(String, String, bool, bool)>,
        from_record: bool,
    ) -> PyResult<Self> {
        let mut out = Vec::with_capacity(fields.len());
        for (name, kind, nullable, from_attr) in fields {
            let kind = match kind.as_str() {
                "long" => Kind::Long,
                "double" => Kind::Double,
                "string" => Kind::String,
                "bytes" => Kind::Bytes,
                "boolean" => Kind::Boolean,
                "string_array" if nullable => Kind::StringArray,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "unsupported field kind {kind:?}"
                    )));
                }
            };
            out.push(Field {
                attr: Attr::named(&name),
                name: PyString::intern(py, &name).unbind(),
                from_attr: from_attr && from_record,
                kind,
                nullable,
            });
        }
        Ok(Encoder {
            header: header.to_vec(),
            fields: out,
            from_record,
            fields_attr: PyString::intern(py, "fields").unbind(),
        })
    }

    /// Header + Avro binary of a datum (a mapping) or, with `from_record`, of a `Record`.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if self.from_record
            && let Ok(record) = obj.cast::<NativeRecord>()
            && !record.get().fields_built(py)
        {
            let mut out: Vec<u8> =
                Vec::with_capacity(self.header.len() + 8 * self.fields.len());
            out.extend_from_slice(&self.header);
            if self.write_native(py, record.get(), &mut out)? {
                return Ok(PyBytes::new(py, &out));
            }
        }
        let data = if self.from_record {
            obj.getattr(self.fields_attr.bind(py))?
        } else {
            obj.clone()
        };
        let dict = data.cast::<PyDict>().ok();
        let mut out: Vec<u8> = Vec::with_capacity(self.header.len() + 16 * self.fields.len());
        out.extend_from_slice(&self.header);
        // The decoder's dicts hold the columns in schema order with the same (interned) key
        // objects: walk the dict alongside the schema, and look keys up only once the walk
        // meets a key it does not expect.
        let mut walking = dict.is_some();
        let mut position: pyo3::ffi::Py_ssize_t = 0;
        for field in &self.fields {
            let name = field.name.bind(py);
            if field.from_attr {
                write_value(&mut out, field.kind, field.nullable, &obj.getattr(name)?)?;
                continue;
            }
            if walking && let Some(dict) = dict {
                let mut key: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
                let mut value: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
                // SAFETY: a dict we hold, not mutated during the walk (nothing here runs
                // Python code that could touch it); key/value are borrowed references.
                let found = unsafe {
                    pyo3::ffi::PyDict_Next(dict.as_ptr(), &mut position, &mut key, &mut value)
                };
                if found != 0 && key == name.as_ptr() {
                    // SAFETY: a borrowed reference from the dict, alive while we hold it.
                    let value = unsafe { Bound::from_borrowed_ptr(py, value) };
                    write_value(&mut out, field.kind, field.nullable, &value)?;
                    continue;
                }
                walking = false;
            }
            let value = if let Some(dict) = dict {
                match dict.get_item(name)? {
                    Some(value) => value,
                    None => return Err(PyKeyError::new_err(name.clone().unbind())),
                }
            } else {
                data.get_item(name)?
            };
            write_value(&mut out, field.kind, field.nullable, &value)?;
        }
        Ok(PyBytes::new(py, &out))
    }
}

impl Encoder {
    /// The body of a native record from its Rust values; false when the schema and the
    /// record do not line up plainly (then the caller takes the general path).
    fn write_native(
        &self,
        py: Python<'_>,
        record: &NativeRecord,
        out: &mut Vec<u8>,
    ) -> PyResult<bool> {
        let shape = &record.shape;
        let layout = &shape.layout;
        let values = record.values();
        let missing = layout.missing_keys();
        let columns = values.len();
        // The record's keys (columns, then missing ones) in order, as the dict would hold
        // them: matched against the schema's names by identity (both are interned).
        let mut next = 0usize;
        for field in &self.fields {
            let written = if field.from_attr {
                let value = match field.attr {
                    Attr::TrId => Value::Text(&shape.canonical_text),
                    Attr::Venue => Value::Text(&shape.venue_text),
                    Attr::Symbol => Value::Text(record.symbol_text()),
                    Attr::EventTime => record.event_time.map_or(Value::Null, Value::Long),
                    Attr::Index => Value::Long(record.index as i64),
                    Attr::Extra => Value::Null,
                    Attr::ReceivedAt | Attr::Session | Attr::Seq => {
                        let frame = &record.frame;
                        let object = match field.attr {
                            Attr::ReceivedAt => &frame.received_at,
                            Attr::Session => &frame.session,
                            _ => &frame.seq,
                        };
                        write_value(out, field.kind, field.nullable, object.bind(py))?;
                        continue;
                    }
                    Attr::Other => return Ok(false),
                };
                write_typed(out, field.kind, field.nullable, value)
            } else {
                let name = field.name.as_ptr();
                let value = if next < columns {
                    if layout.column_key(next).as_ptr() != name {
                        return Ok(false);
                    }
                    record.value(&values[next])
                } else {
                    match missing.get(next - columns) {
                        Some(key) if key.as_ptr() == name => Value::Null,
                        _ => return Ok(false),
                    }
                };
                next += 1;
                write_typed(out, field.kind, field.nullable, value)
            };
            if !written {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
