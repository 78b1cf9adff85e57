//! Triton's system shared-memory extension: a same-host client registers a
//! POSIX shared-memory object (`shm_open` key) as a named region, then names
//! the region, an offset and a byte size in place of an input's data or to
//! receive an output.
//!
//! Every offset and size is checked before memory is touched: a region must
//! lie inside its object when registered, and a request's range inside its
//! region. The memory stays writable by the client at any time, so it is
//! never borrowed as a Rust slice: data is copied in and out through raw
//! pointers, once per request.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};
use mlserve_proto::pb;
use mlserve_proto::pb::infer_parameter::ParameterChoice;
use mlserve_proto::ServiceError;

pub use mlserve_proto::inference::{
    SHARED_MEMORY_BYTE_SIZE as BYTE_SIZE, SHARED_MEMORY_OFFSET as OFFSET,
    SHARED_MEMORY_REGION as REGION,
};

/// Where POSIX shared-memory objects live on Linux.
const SHM_DIR: &str = "/dev/shm";

/// One registered region: `byte_size` bytes from `offset` of the object `key`.
pub struct Region {
    /// The name requests use.
    pub name: String,
    /// The `shm_open` key, as registered.
    pub key: String,
    /// Start of the region within the object.
    pub offset: u64,
    /// Length of the region.
    pub byte_size: u64,
    map: MmapRaw,
}

impl Region {
    /// Copies `size` bytes at `offset` within the region out of it.
    fn read(&self, offset: u64, size: u64) -> Result<Bytes, ServiceError> {
        let start = self.range(offset, size)?;
        let mut out = vec![0u8; size as usize];
        // SAFETY: `range` checked that [start, start + size) lies inside the
        // mapping; the bytes are copied, never borrowed.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(start), out.as_mut_ptr(), out.len())
        };
        Ok(Bytes::from(out))
    }

    /// Copies `data` into the region at `offset`.
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), ServiceError> {
        let start = self.range(offset, data.len() as u64)?;
        // SAFETY: `range` checked that the destination lies inside the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(start),
                data.len(),
            )
        };
        Ok(())
    }

    /// The position in the mapping of `size` bytes at `offset` of the region,
    /// refused unless they lie inside it.
    fn range(&self, offset: u64, size: u64) -> Result<usize, ServiceError> {
        match offset.checked_add(size) {
            Some(end) if end <= self.byte_size => Ok((self.offset + offset) as usize),
            _ => Err(ServiceError::bad_request(format!(
                "{size} bytes at offset {offset} lie outside shared memory region '{}' ({} bytes)",
                self.name, self.byte_size
            ))),
        }
    }

    /// The region as the gRPC status reports it.
    pub fn status(&self) -> pb::system_shared_memory_status_response::RegionStatus {
        pb::system_shared_memory_status_response::RegionStatus {
            name: self.name.clone(),
            key: self.key.clone(),
            offset: self.offset,
            byte_size: self.byte_size,
        }
    }
}

/// The registered regions of one server.
#[derive(Default)]
pub struct SharedMemoryRegions {
    regions: Mutex<BTreeMap<String, Arc<Region>>>,
}

impl SharedMemoryRegions {
    /// Maps `byte_size` bytes from `offset` of the object `key` as `name`.
    pub fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), ServiceError> {
        if name.is_empty() {
            return Err(ServiceError::bad_request(
                "a shared memory region needs a name",
            ));
        }
        if self.lock().contains_key(name) {
            return Err(ServiceError::conflict(format!(
                "shared memory region '{name}' already in manager"
            )));
        }
        let path = object_path(key)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| {
                ServiceError::bad_request(format!(
                    "Unable to open shared memory region: '{key}': {e}"
                ))
            })?;
        let object_size = file
            .metadata()
            .map_err(|e| ServiceError::internal(format!("shared memory '{key}': {e}")))?
            .len();
        let end = offset
            .checked_add(byte_size)
            .filter(|end| *end <= object_size);
        let Some(end) = end.filter(|_| byte_size > 0) else {
            return Err(ServiceError::bad_request(format!(
                "shared memory region '{name}': {byte_size} bytes at offset {offset} do not fit \
                 the {object_size}-byte object '{key}'"
            )));
        };
        let length = usize::try_from(end)
            .map_err(|_| ServiceError::bad_request("shared memory region too large"))?;
        let map = MmapOptions::new().len(length).map_raw(&file).map_err(|e| {
            ServiceError::bad_request(format!("Unable to map shared memory '{key}': {e}"))
        })?;
        let region = Region {
            name: name.to_string(),
            key: key.to_string(),
            offset,
            byte_size,
            map,
        };
        let mut regions = self.lock();
        if regions.contains_key(name) {
            return Err(ServiceError::conflict(format!(
                "shared memory region '{name}' already in manager"
            )));
        }
        regions.insert(name.to_string(), Arc::new(region));
        Ok(())
    }

    /// Forgets `name`, or every region when `name` is empty. Requests that
    /// already hold a region finish with it; unknown names are not an error.
    pub fn unregister(&self, name: &str) {
        let mut regions = self.lock();
        if name.is_empty() {
            regions.clear();
        } else {
            regions.remove(name);
        }
    }

    /// `name`'s region, or every region when `name` is empty.
    pub fn status(&self, name: &str) -> Result<Vec<Arc<Region>>, ServiceError> {
        let regions = self.lock();
        if name.is_empty() {
            return Ok(regions.values().cloned().collect());
        }
        Ok(vec![find(&regions, name)?])
    }

    /// Replaces the shared-memory inputs of `request` by their bytes, so that
    /// every input's data is in `raw_input_contents`, one entry per input.
    /// Inputs without a region keep their raw entry (in order) or contents.
    pub fn resolve_inputs(&self, request: &mut pb::ModelInferRequest) -> Result<(), ServiceError> {
        if !request
            .inputs
            .iter()
            .any(|i| i.parameters.contains_key(REGION))
        {
            return Ok(());
        }
        let mut raw = std::mem::take(&mut request.raw_input_contents).into_iter();
        let mut resolved = Vec::with_capacity(request.inputs.len());
        for input in &mut request.inputs {
            match Use::take(&mut input.parameters, "input", &input.name)? {
                Some(place) => {
                    if input.contents.take().is_some() {
                        return Err(ServiceError::bad_request(format!(
                            "input '{}' names a shared memory region and carries contents",
                            input.name
                        )));
                    }
                    resolved.push(self.region(&place.region)?.read(place.offset, place.size)?);
                }
                None => match raw.next() {
                    Some(bytes) => resolved.push(bytes),
                    None => resolved.push(super::validate::contents_as_raw(input)?),
                },
            }
        }
        if raw.next().is_some() {
            return Err(ServiceError::bad_request(
                "more raw input contents than inputs without a shared memory region",
            ));
        }
        request.raw_input_contents = resolved;
        Ok(())
    }

    /// The outputs of `request` that go to a region, taken out of their
    /// parameters, by output name.
    pub fn output_places(
        &self,
        request: &mut pb::ModelInferRequest,
    ) -> Result<BTreeMap<String, Use>, ServiceError> {
        let mut places = BTreeMap::new();
        for output in &mut request.outputs {
            if let Some(place) = Use::take(&mut output.parameters, "output", &output.name)? {
                self.region(&place.region)?;
                places.insert(output.name.clone(), place);
            }
        }
        Ok(places)
    }

    /// Writes the outputs of `response` that `places` sends to a region and
    /// leaves an empty raw entry in their place, with the region's parameters
    /// on the output, as Triton answers.
    pub fn write_outputs(
        &self,
        places: &BTreeMap<String, Use>,
        response: &mut pb::ModelInferResponse,
    ) -> Result<(), ServiceError> {
        if places.is_empty() {
            return Ok(());
        }
        for (output, raw) in response
            .outputs
            .iter_mut()
            .zip(response.raw_output_contents.iter_mut())
        {
            let Some(place) = places.get(&output.name) else {
                continue;
            };
            if raw.len() as u64 > place.size {
                return Err(ServiceError::bad_request(format!(
                    "shared memory size specified with the request for output '{}' ({} bytes) \
                     should be at least {} bytes to hold the results",
                    output.name,
                    place.size,
                    raw.len()
                )));
            }
            self.region(&place.region)?.write(place.offset, raw)?;
            output.parameters.extend(place.parameters(raw.len() as u64));
            *raw = Bytes::new();
        }
        Ok(())
    }

    fn region(&self, name: &str) -> Result<Arc<Region>, ServiceError> {
        find(&self.lock(), name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Region>>> {
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `name`'s region in `regions`, or NOT_FOUND in Triton's words.
fn find(regions: &BTreeMap<String, Arc<Region>>, name: &str) -> Result<Arc<Region>, ServiceError> {
    regions.get(name).cloned().ok_or_else(|| {
        ServiceError::not_found(format!(
            "Unable to find system shared memory region: '{name}'"
        ))
    })
}

/// An input's or output's place in a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// The region's name.
    pub region: String,
    /// Start within the region.
    pub offset: u64,
    /// Bytes used (for an output, the room given).
    pub size: u64,
}

impl Use {
    /// Takes the shared-memory parameters out of the `parameters` of the
    /// `kind` ("input" or "output") `name`; `None` when they name no region
    /// (the common case, which allocates nothing).
    fn take(
        parameters: &mut std::collections::HashMap<String, pb::InferParameter>,
        kind: &str,
        name: &str,
    ) -> Result<Option<Use>, ServiceError> {
        let Some(region) = parameters.remove(REGION) else {
            return Ok(None);
        };
        let what = &format!("{kind} '{name}'");
        let region = match region.parameter_choice {
            Some(ParameterChoice::StringParam(name)) => name,
            _ => {
                return Err(ServiceError::bad_request(format!(
                    "{what}: '{REGION}' must be a string"
                )))
            }
        };
        let size = count(parameters.remove(BYTE_SIZE), BYTE_SIZE, what)?.ok_or_else(|| {
            ServiceError::bad_request(format!(
                "{what} names a shared memory region without '{BYTE_SIZE}'"
            ))
        })?;
        let offset = count(parameters.remove(OFFSET), OFFSET, what)?.unwrap_or(0);
        Ok(Some(Use {
            region,
            offset,
            size,
        }))
    }

    /// The parameters an output written to a region carries in the answer.
    fn parameters(&self, written: u64) -> Vec<(String, pb::InferParameter)> {
        let int = |v: u64| pb::InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(v as i64)),
        };
        vec![
            (
                REGION.to_string(),
                pb::InferParameter {
                    parameter_choice: Some(ParameterChoice::StringParam(self.region.clone())),
                },
            ),
            (BYTE_SIZE.to_string(), int(written)),
            (OFFSET.to_string(), int(self.offset)),
        ]
    }
}

/// A non-negative integer parameter.
fn count(
    parameter: Option<pb::InferParameter>,
    key: &str,
    what: &str,
) -> Result<Option<u64>, ServiceError> {
    let value = match parameter.and_then(|p| p.parameter_choice) {
        None => return Ok(None),
        Some(ParameterChoice::Int64Param(v)) => u64::try_from(v).ok(),
        Some(ParameterChoice::Uint64Param(v)) => Some(v),
        Some(_) => None,
    };
    value.map(Some).ok_or_else(|| {
        ServiceError::bad_request(format!("{what}: '{key}' must be a non-negative integer"))
    })
}

/// The file of the POSIX shared-memory object `key` ("/name", one component).
fn object_path(key: &str) -> Result<PathBuf, ServiceError> {
    // shm_open ignores leading slashes, as glibc does.
    let name = key.trim_start_matches('/');
    let valid = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if !valid {
        return Err(ServiceError::bad_request(format!(
            "'{key}' is not a shared memory key (one name, as given to shm_open)"
        )));
    }
    Ok(PathBuf::from(SHM_DIR).join(name))
}

#[cfg(test)]
#[path = "shared_memory_tests.rs"]
mod tests;
