//! The model engine: loads ONNX files, says what they take and give, and runs them on
//! batches of rows. Calls are synchronous and CPU-bound: run them on a compute thread.

use crate::domain::TensorInfo;
use std::sync::Arc;

/// Numbers in a shape: `values` in row-major order, as `f64` whatever the model's element
/// type (models here take and give floats and integers that fit it).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The values, `shape`'s product of them.
    pub values: Vec<f64>,
}

/// What an engine found a model file to be: its inputs and outputs, in the model's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// The inputs.
    pub inputs: Vec<TensorInfo>,
    /// The outputs.
    pub outputs: Vec<TensorInfo>,
}

/// Loads and runs models (tract).
pub trait ModelEngine: Send + Sync {
    /// Loads, type-checks and plans `bytes` as a model: its signature, or what is wrong (not
    /// a model, an operator the engine lacks, a shape it cannot plan).
    fn inspect(&self, bytes: &[u8]) -> Result<Signature, String>;
    /// Loads `bytes` for running.
    fn load(&self, bytes: &[u8]) -> Result<Arc<dyn LoadedModel>, String>;
}

/// A model ready to run.
pub trait LoadedModel: Send + Sync {
    /// Runs one batch: one tensor per input, in the model's order, each with the batch's
    /// rows along its first dimension; answers the outputs in the model's order.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String>;
}
