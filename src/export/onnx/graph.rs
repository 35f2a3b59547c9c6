//! A small ONNX graph builder: initializers in little-endian `raw_data`, nodes with attributes, and the
//! model envelope (IR version, opset, the `input`/`logits` signature with a dynamic batch, metadata).
//!
//! Everything is appended in call order, so the same calls always encode to the same bytes.

use prost::Message;

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension, tensor_shape_proto::Dimension,
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The default-domain opset: 17, as the issue asks and torch.onnx's TorchScript exporter defaults to.
pub const OPSET_VERSION: i64 = 17;
/// The IR version torch.onnx writes beside opset 17 (older runtimes reject newer IR versions).
pub const IR_VERSION: i64 = 8;
/// Name of the graph's image input, `[N, 3, H, W]` float32.
pub const INPUT_NAME: &str = "input";
/// Name of the graph's output, `[N, classes]` float32.
pub const OUTPUT_NAME: &str = "logits";
/// The symbolic batch dimension of input and output.
pub const BATCH_DIM: &str = "batch";

/// A tensor element type that can be stored in an initializer.
pub trait Element: Copy {
    const DATA_TYPE: DataType;
    fn extend_le(values: &[Self], bytes: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $data_type:expr) => {
        impl Element for $t {
            const DATA_TYPE: DataType = $data_type;
            fn extend_le(values: &[Self], bytes: &mut Vec<u8>) {
                bytes.reserve(values.len() * std::mem::size_of::<$t>());
                for value in values {
                    bytes.extend_from_slice(&value.to_le_bytes());
                }
            }
        }
    };
}
element!(f32, DataType::Float);
element!(i8, DataType::Int8);
element!(u8, DataType::Uint8);
element!(i32, DataType::Int32);
element!(i64, DataType::Int64);

/// A node attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// The model-level `metadata_props`, in the order given.
pub type Metadata = Vec<(String, String)>;

/// Accumulates nodes and initializers of one graph.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an initializer of the given shape (`[]` for a scalar) and returns its name.
    pub fn initializer<T: Element>(&mut self, name: &str, dims: &[usize], values: &[T]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len(), "initializer `{name}` shape");
        let mut raw = Vec::new();
        T::extend_le(values, &mut raw);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(T::DATA_TYPE as i32),
            name: Some(name.to_string()),
            raw_data: Some(raw),
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds a node `op(inputs) -> output` (named after its output) and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], output: &str, attributes: &[(&str, Attr)]) -> String {
        self.node_with_outputs(op, inputs, &[output], attributes);
        output.to_string()
    }

    /// Adds a node with several outputs.
    pub fn node_with_outputs(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attributes: &[(&str, Attr)]) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(format!("{op}:{}", outputs[0])),
            op_type: Some(op.to_string()),
            attribute: attributes.iter().map(|(name, value)| attribute(name, value)).collect(),
            ..Default::default()
        });
    }

    /// The model: `input` `[batch, 3, side, side]` -> `logits` `[batch, classes]`, the graph's output being
    /// the tensor named `logits`.
    pub fn finish(self, graph_name: &str, side: usize, classes: usize, metadata: Metadata) -> ModelProto {
        let graph = GraphProto {
            node: self.nodes,
            name: Some(graph_name.to_string()),
            initializer: self.initializers,
            input: vec![float_value(INPUT_NAME, &[None, Some(3), Some(side), Some(side)])],
            output: vec![float_value(OUTPUT_NAME, &[None, Some(classes)])],
            ..Default::default()
        };
        ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET_VERSION) }],
            producer_name: Some(PRODUCER_NAME.to_string()),
            producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            graph: Some(graph),
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto { key: Some(key), value: Some(value) })
                .collect(),
            ..Default::default()
        }
    }
}

/// `producer_name` of every model we write.
pub const PRODUCER_NAME: &str = "vggq";

/// The protobuf encoding of `model`.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let base = AttributeProto { name: Some(name.to_string()), ..Default::default() };
    match value {
        Attr::Int(i) => AttributeProto { i: Some(*i), r#type: Some(AttributeType::Int as i32), ..base },
        Attr::Ints(ints) => AttributeProto { ints: ints.clone(), r#type: Some(AttributeType::Ints as i32), ..base },
        Attr::Float(f) => AttributeProto { f: Some(*f), r#type: Some(AttributeType::Float as i32), ..base },
    }
}

/// A float32 tensor value; `None` dimensions are the symbolic batch.
fn float_value(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(size) => dimension::Value::DimValue(*size as i64),
                None => dimension::Value::DimParam(BATCH_DIM.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
