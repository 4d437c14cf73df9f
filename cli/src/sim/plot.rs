//! `herald sim --plot`: messages against job size, herald and the naive baseline.

use std::path::Path;

use anyhow::{Result, anyhow};
use herald_core::Node;
use herald_sim::{NaiveNode, Scenario, TraceMode};
use indicatif::ProgressBar;
use plotters::prelude::*;

use super::{SimArgs, scenario, simulate};

/// Naive runs predicted to send more messages than this are not simulated; the
/// plot shows their formula, `S·2(N-1)`, as a dashed line instead.
const NAIVE_SIMULATED_MAX: u64 = 2_000_000;

/// One job size's measurements.
struct Point {
    nodes: u32,
    herald: u64,
    naive: Option<u64>,
    naive_formula: u64,
}

/// Simulates job sizes from 2 to `--nodes` (doubling) with `min(S, N)` requesters
/// and draws both protocols' message counts on log-log axes.
pub fn messages_against_nodes(args: &SimArgs, path: &Path) -> Result<()> {
    let sizes = sizes(args.nodes);
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(sizes.len() as u64)
    };
    let mut points = Vec::new();
    for nodes in sizes {
        let scenario = sweep_scenario(args, nodes);
        let herald = simulate::<Node>(&scenario, TraceMode::Hash, false)?.messages;
        let naive_formula = scenario.naive_message_bound();
        let naive = if naive_formula <= NAIVE_SIMULATED_MAX {
            Some(simulate::<NaiveNode>(&scenario, TraceMode::Hash, false)?.messages)
        } else {
            None
        };
        points.push(Point {
            nodes,
            herald,
            naive,
            naive_formula,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    draw(args, &points, path).map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}

fn sizes(max: u32) -> Vec<u32> {
    let mut sizes: Vec<u32> = std::iter::successors(Some(2u32), |n| n.checked_mul(2))
        .take_while(|n| *n < max)
        .collect();
    sizes.push(max.max(2));
    sizes
}

fn sweep_scenario(args: &SimArgs, nodes: u32) -> Scenario {
    let mut scenario = scenario(args);
    let requesters = args.requesters.min(nodes);
    scenario.nodes = nodes;
    scenario.requests =
        Scenario::replicated(nodes, requesters, scenario.requests[0].script.clone()).requests;
    scenario
}

fn draw(args: &SimArgs, points: &[Point], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_nodes = points.iter().map(|p| p.nodes).max().unwrap_or(2);
    let max_messages = points
        .iter()
        .map(|p| p.naive_formula.max(p.herald))
        .max()
        .unwrap_or(1);
    let requesters = match args.requesters {
        1 => "1 requester".to_string(),
        s => format!("min({s}, N) requesters"),
    };
    let caption = format!(
        "Messages for one global registration ({requesters}, fan-out {})",
        args.fanout
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (2u32..max_nodes.max(3)).log_scale(),
            (1u64..max_messages.max(2) * 2).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("nodes (N)")
        .y_desc("messages")
        .draw()?;

    let herald: Vec<(u32, u64)> = points.iter().map(|p| (p.nodes, p.herald)).collect();
    chart
        .draw_series(LineSeries::new(herald, BLUE.stroke_width(3)))?
        .label("herald (simulated)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(3)));
    let naive: Vec<(u32, u64)> = points
        .iter()
        .filter_map(|p| p.naive.map(|m| (p.nodes, m)))
        .collect();
    chart
        .draw_series(LineSeries::new(naive, RED.stroke_width(3)))?
        .label("naive baseline (simulated)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(3)));
    // The formula continues the naive line where simulating it would take too long.
    let first_unsimulated = points.iter().position(|p| p.naive.is_none());
    if let Some(first) = first_unsimulated {
        let formula: Vec<(u32, u64)> = points[first.saturating_sub(1)..]
            .iter()
            .map(|p| (p.nodes, p.naive.unwrap_or(p.naive_formula)))
            .collect();
        chart
            .draw_series(DashedLineSeries::new(formula, 8, 6, RED.stroke_width(2)))?
            .label("naive baseline, S·2(N-1) (not simulated)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.mix(0.6)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
