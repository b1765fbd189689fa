//! The layered layout of a DAG for the graph view: each task in the layer one past its deepest
//! upstream task (left to right), ordered within a layer by the mean position of its upstream
//! tasks so that edges cross less, and edges drawn as curves between node sides.

use std::collections::HashMap;

use weft_api_types::TaskInfo;

pub const NODE_WIDTH: f64 = 170.0;
pub const NODE_HEIGHT: f64 = 36.0;
const GAP_X: f64 = 60.0;
const GAP_Y: f64 = 18.0;
const MARGIN: f64 = 10.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub task_id: String,
    pub operator: String,
    pub layer: usize,
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// An SVG path (`M … C …`).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub width: f64,
    pub height: f64,
}

/// Lays out `tasks` (any order; upstream ids that are not in the list are ignored, and a cycle
/// cannot make it loop: a task's layer is computed at most once per task).
pub fn layout(tasks: &[TaskInfo]) -> Layout {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| (task.task_id.as_str(), i))
        .collect();
    let mut layer: Vec<Option<usize>> = vec![None; tasks.len()];
    fn depth(
        i: usize,
        tasks: &[TaskInfo],
        index: &HashMap<&str, usize>,
        layer: &mut [Option<usize>],
        visiting: &mut [bool],
    ) -> usize {
        if let Some(known) = layer[i] {
            return known;
        }
        if visiting[i] {
            return 0;
        }
        visiting[i] = true;
        let mut deepest = 0;
        for upstream in &tasks[i].upstream {
            if let Some(&u) = index.get(upstream.as_str()) {
                deepest = deepest.max(depth(u, tasks, index, layer, visiting) + 1);
            }
        }
        visiting[i] = false;
        layer[i] = Some(deepest);
        deepest
    }
    let mut visiting = vec![false; tasks.len()];
    for i in 0..tasks.len() {
        depth(i, tasks, &index, &mut layer, &mut visiting);
    }
    let layer: Vec<usize> = layer.into_iter().map(Option::unwrap_or_default).collect();
    let layers = layer.iter().copied().max().map_or(0, |m| m + 1);

    // Order within each layer: by the mean row of upstream tasks, then by input order.
    let mut row = vec![0usize; tasks.len()];
    let mut tallest = 0;
    for current in 0..layers {
        let mut members: Vec<(f64, usize)> = (0..tasks.len())
            .filter(|&i| layer[i] == current)
            .map(|i| {
                let rows: Vec<f64> = tasks[i]
                    .upstream
                    .iter()
                    .filter_map(|u| index.get(u.as_str()))
                    .map(|&u| row[u] as f64)
                    .collect();
                let key = if rows.is_empty() {
                    i as f64
                } else {
                    rows.iter().sum::<f64>() / rows.len() as f64
                };
                (key, i)
            })
            .collect();
        members.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (position, (_, i)) in members.iter().enumerate() {
            row[*i] = position;
        }
        tallest = tallest.max(members.len());
    }

    let nodes: Vec<Node> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| Node {
            task_id: task.task_id.clone(),
            operator: task.operator.clone(),
            layer: layer[i],
            x: MARGIN + layer[i] as f64 * (NODE_WIDTH + GAP_X),
            y: MARGIN + row[i] as f64 * (NODE_HEIGHT + GAP_Y),
        })
        .collect();
    let mut edges = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        for upstream in &task.upstream {
            if let Some(&u) = index.get(upstream.as_str()) {
                let (x1, y1) = (nodes[u].x + NODE_WIDTH, nodes[u].y + NODE_HEIGHT / 2.0);
                let (x2, y2) = (nodes[i].x, nodes[i].y + NODE_HEIGHT / 2.0);
                let bend = (x2 - x1).abs() / 2.0;
                edges.push(Edge {
                    from: upstream.clone(),
                    to: task.task_id.clone(),
                    path: format!(
                        "M {x1:.1} {y1:.1} C {:.1} {y1:.1}, {:.1} {y2:.1}, {x2:.1} {y2:.1}",
                        x1 + bend,
                        x2 - bend
                    ),
                });
            }
        }
    }
    Layout {
        nodes,
        edges,
        width: 2.0 * MARGIN + (layers as f64 * (NODE_WIDTH + GAP_X) - GAP_X).max(0.0),
        height: 2.0 * MARGIN + tallest as f64 * (NODE_HEIGHT + GAP_Y),
    }
}

/// Points of a sparkline (`x,y x,y …`) for values drawn in a `width` × `height` box, the
/// largest value touching the top.
pub fn sparkline_points(values: &[u64], width: f64, height: f64) -> String {
    if values.is_empty() {
        return String::new();
    }
    let max = values.iter().copied().max().unwrap_or(1).max(1) as f64;
    let step = if values.len() > 1 {
        width / (values.len() - 1) as f64
    } else {
        0.0
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = i as f64 * step;
            let y = height - (*v as f64 / max) * (height - 2.0) - 1.0;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, upstream: &[&str]) -> TaskInfo {
        TaskInfo {
            task_id: id.into(),
            operator: "BashOperator".into(),
            upstream: upstream.iter().map(|s| s.to_string()).collect(),
            downstream: vec![],
            group: None,
            trigger_rule: "all_success".into(),
            retries: 0,
            pool: "default_pool".into(),
        }
    }

    #[test]
    fn a_task_sits_one_layer_past_its_deepest_upstream() {
        let tasks = vec![
            task("extract", &[]),
            task("a", &["extract"]),
            task("b", &["extract"]),
            task("join", &["a", "b", "extract"]),
        ];
        let layout = layout(&tasks);
        let layer = |id: &str| layout.nodes.iter().find(|n| n.task_id == id).unwrap().layer;
        assert_eq!(
            (layer("extract"), layer("a"), layer("b"), layer("join")),
            (0, 1, 1, 2)
        );
        assert_eq!(layout.edges.len(), 5);
        let a = layout.nodes.iter().find(|n| n.task_id == "a").unwrap();
        let b = layout.nodes.iter().find(|n| n.task_id == "b").unwrap();
        assert_eq!(a.x, b.x);
        assert_ne!(a.y, b.y, "tasks of one layer do not overlap");
        assert!(layout.width >= 3.0 * NODE_WIDTH && layout.height >= 2.0 * NODE_HEIGHT);
    }

    #[test]
    fn a_cycle_or_an_unknown_upstream_does_not_hang_the_layout() {
        let tasks = vec![
            task("a", &["b"]),
            task("b", &["a"]),
            task("c", &["missing"]),
        ];
        let layout = layout(&tasks);
        assert_eq!(layout.nodes.len(), 3);
        assert_eq!(layout.edges.len(), 2);
    }

    #[test]
    fn sparkline_scales_to_the_largest_value() {
        assert_eq!(sparkline_points(&[], 100.0, 20.0), "");
        assert_eq!(
            sparkline_points(&[0, 10], 100.0, 20.0),
            "0.0,19.0 100.0,1.0"
        );
    }
}
