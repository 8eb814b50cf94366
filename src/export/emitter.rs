//! The graph under construction ([`Emitter`]): nodes and initializers with unique value names.

use std::collections::HashSet;

use super::model::{AttrValue, Attribute, Dim, Graph, Node, Tensor, ValueInfo};

/// Collects a graph's nodes and initializers; every value name is unique. Node outputs get
/// their shapes with [`annotate_new`](Emitter::annotate_new) (QONNX tools expect every value
/// to have one).
#[derive(Debug, Default)]
pub struct Emitter {
    /// The graph so far.
    pub graph: Graph,
    used: HashSet<String>,
    /// Nodes before this index have their outputs annotated.
    annotated: usize,
}

impl Emitter {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        Emitter { graph: Graph { name: name.to_string(), ..Graph::default() }, used: HashSet::new(), annotated: 0 }
    }

    /// Records `dims` as the shape of every node output emitted since the last call, except
    /// the graph outputs (`skip`), whose shapes the graph's output list gives.
    pub fn annotate_new(&mut self, dims: &[Dim], skip: &[&str]) {
        for n in &self.graph.nodes[self.annotated..] {
            for o in &n.outputs {
                if !skip.contains(&o.as_str()) {
                    self.graph.value_info.push(ValueInfo::f32(o.clone(), dims.to_vec()));
                }
            }
        }
        self.annotated = self.graph.nodes.len();
    }

    /// Reserves `base`, or `base_2`, `base_3`, ... when taken.
    pub fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 2;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// A float32 initializer; returns its value name.
    pub fn tensor(&mut self, name: &str, dims: Vec<i64>, values: Vec<f32>) -> String {
        let name = self.unique(name);
        self.graph.initializers.push(Tensor::f32(name.clone(), dims, values));
        name
    }

    /// A float32 scalar initializer.
    pub fn scalar(&mut self, name: &str, v: f32) -> String {
        self.tensor(name, vec![], vec![v])
    }

    /// A node of the ONNX domain whose one output is named `name`; returns the output name.
    pub fn node(&mut self, name: &str, op: &str, inputs: Vec<String>, attributes: Vec<(&str, AttrValue)>) -> String {
        self.node_in("", name, op, inputs, attributes)
    }

    /// A node of operator `domain` whose one output is named `name` (made unique).
    pub fn node_in(
        &mut self,
        domain: &str,
        name: &str,
        op: &str,
        inputs: Vec<String>,
        attributes: Vec<(&str, AttrValue)>,
    ) -> String {
        let out = self.unique(name);
        self.graph.nodes.push(Node {
            name: out.clone(),
            op_type: op.to_string(),
            domain: domain.to_string(),
            inputs,
            outputs: vec![out.clone()],
            attributes: attributes.into_iter().map(|(n, v)| Attribute::new(n, v)).collect(),
        });
        out
    }
}
