//! Small helpers over the hdf5 crate shared by every file the crate writes and reads; errors are
//! strings, wrapped with the file's path by the caller.

use hdf5::types::VarLenUnicode;

pub fn text(s: &str) -> Result<VarLenUnicode, String> {
    s.parse::<VarLenUnicode>().map_err(|e| e.to_string())
}

pub fn str_attr(loc: &hdf5::Location, name: &str, value: &str) -> Result<(), String> {
    loc.new_attr::<VarLenUnicode>().create(name).and_then(|a| a.write_scalar(&text(value)?)).map_err(|e| e.to_string())
}

pub fn scalar_attr<T: hdf5::H5Type>(loc: &hdf5::Location, name: &str, value: T) -> Result<(), String> {
    loc.new_attr::<T>().create(name).and_then(|a| a.write_scalar(&value)).map_err(|e| e.to_string())
}

pub fn dataset<T: hdf5::H5Type>(group: &hdf5::Group, name: &str, data: &[T]) -> Result<hdf5::Dataset, String> {
    group.new_dataset_builder().with_data(data).create(name).map_err(|e| e.to_string())
}

pub fn read_str_attr(loc: &hdf5::Location, name: &str) -> Result<String, String> {
    Ok(loc
        .attr(name)
        .and_then(|a| a.read_scalar::<VarLenUnicode>())
        .map_err(|e| format!("attribute {name}: {e}"))?
        .to_string())
}

pub fn read_scalar_attr<T: hdf5::H5Type>(loc: &hdf5::Location, name: &str) -> Result<T, String> {
    loc.attr(name).and_then(|a| a.read_scalar()).map_err(|e| format!("attribute {name}: {e}"))
}

pub fn read_dataset<T: hdf5::H5Type>(group: &hdf5::Group, name: &str) -> Result<Vec<T>, String> {
    group.dataset(name).and_then(|d| d.read_raw()).map_err(|e| format!("dataset {name}: {e}"))
}
