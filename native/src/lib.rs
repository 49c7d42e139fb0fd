//! kis_native: the compiled hot path of kis-stream's `producer/frames.py` (typing the fields
//! of a decoded payload) and `producer/avro.py` (Avro binary of a raw record), and the
//! processors' flat Avro reader (`processors/flat_avro.py`).
//!
//! The Python modules stay the reference: the decoder here only takes the plain cases and
//! says "fall back" (returns None) for anything else, and the encoder emits exactly the
//! bytes of the Python encoder (tests compare both, and read the result with fastavro).

use pyo3::prelude::*;

mod decode;
mod encode;
mod flat;
mod frame;
mod record;

#[pymodule]
fn kis_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;

    m.add_class::<decode::RecordLayout>()?;
    m.add_class::<encode::Encoder>()?;
    m.add_class::<flat::FlatReader>()?;
    // The processors' side checks this (not the crate version the producer pins).
    m.add("FLAT_READER_API", 1)?;
    m.add_class::<frame::FrameCore>()?;
    m.add_class::<record::NativeRecord>()?;
    Ok(())
}
