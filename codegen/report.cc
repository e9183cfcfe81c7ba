// Text and HTML renderings of the compile report (see report.h).
#include "codegen/report.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

namespace ravnest::cg {
namespace {

std::string fixed(double v, int digits) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << v;
  return out.str();
}

// Milliseconds with three significant-ish digits.
std::string ms(double seconds) { return fixed(seconds * 1e3, seconds * 1e3 < 10 ? 3 : 1) + " ms"; }

std::string memory_line(const StageReport& s) {
  std::ostringstream out;
  out << human_units(s.mem_total(), "B") << " = params " << human_units(s.mem_params, "B") << " + grads "
      << human_units(s.mem_grads, "B") << " + optimizer " << human_units(s.mem_optimizer, "B") << " + activations "
      << human_units(s.mem_activations, "B") << " (" << s.in_flight << " micro-batch(es) in flight)";
  if (s.capacity > 0)
    out << " of " << human_units(s.capacity, "B") << " (" << fixed(100.0 * s.mem_total() / s.capacity, 1) << "%)";
  return out.str();
}

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// A stacked horizontal bar per stage: F, B, W and link time, on one scale per cluster.
std::string svg_chart(const ClusterReport& cl) {
  constexpr int kLabel = 220, kWidth = 520, kBar = 22, kGap = 8, kTop = 24;
  double longest = 0;
  for (const StageReport& s : cl.stages) longest = std::max(longest, s.compute_s() + s.transfer_s);
  if (!(longest > 0)) longest = 1;
  const int height = kTop + static_cast<int>(cl.stages.size()) * (kBar + kGap) + 8;
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kLabel + kWidth + 120 << "\" height=\"" << height
      << "\" role=\"img\" aria-label=\"predicted stage times of cluster " << cl.index << "\">\n";
  const char* colors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#bab0ac"};
  const char* names[] = {"F", "B", "W", "link"};
  for (int i = 0; i < 4; ++i)
    out << "<rect x=\"" << kLabel + i * 70 << "\" y=\"4\" width=\"12\" height=\"12\" fill=\"" << colors[i]
        << "\"/><text x=\"" << kLabel + i * 70 + 16 << "\" y=\"14\" font-size=\"12\">" << names[i] << "</text>\n";
  for (size_t i = 0; i < cl.stages.size(); ++i) {
    const StageReport& s = cl.stages[i];
    const int y = kTop + static_cast<int>(i) * (kBar + kGap);
    out << "<text x=\"" << kLabel - 6 << "\" y=\"" << y + 15 << "\" font-size=\"12\" text-anchor=\"end\">stage "
        << s.stage << ": " << escape(s.machine) << "</text>\n";
    double x = kLabel;
    const double parts[] = {s.f_s, s.b_s, s.w_s, s.transfer_s};
    for (int p = 0; p < 4; ++p) {
      const double w = parts[p] / longest * kWidth;
      if (w <= 0) continue;
      out << "<rect x=\"" << fixed(x, 2) << "\" y=\"" << y << "\" width=\"" << fixed(w, 2) << "\" height=\"" << kBar
          << "\" fill=\"" << colors[p] << "\"><title>" << names[p] << " " << ms(parts[p]) << "</title></rect>\n";
      x += w;
    }
    out << "<text x=\"" << fixed(x + 6, 2) << "\" y=\"" << y + 15 << "\" font-size=\"12\">"
        << ms(s.compute_s() + s.transfer_s) << "</text>\n";
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace

std::string human_units(double v, const char* unit) {
  std::ostringstream out;
  const char* prefixes[] = {"", "K", "M", "G", "T", "P"};
  int i = 0;
  while (v >= 1000 && i < 5) {
    v /= 1000;
    ++i;
  }
  out << std::fixed << std::setprecision(v < 10 ? 2 : 1) << v << " " << prefixes[i] << unit;
  return out.str();
}

std::string render_report_text(const CompileReport& report) {
  std::ostringstream text;
  text << report.title << "\n" << report.header;
  if (!report.devices.empty()) text << "devices: " << report.devices << "\n";
  if (!report.cluster_why.empty()) text << "\nclusters:\n" << report.cluster_why << "\n";
  for (const ClusterReport& cl : report.clusters) {
    text << "\ncluster " << cl.index << ": " << cl.stages.size() << " stage(s), split by " << cl.method << "\n";
    if (!cl.order.empty()) text << "pipeline order: " << cl.order << "\n";
    double slowest = 0;
    for (const StageReport& s : cl.stages) slowest = std::max(slowest, s.compute_s() + s.transfer_s);
    for (const StageReport& s : cl.stages) {
      text << "stage " << s.stage << " -> " << s.node_id << " on " << s.machine << " (" << s.address << ")\n"
           << "  ops: " << s.ops << " (" << s.nodes << ")\n"
           << "  parameters: " << s.parameters << " (" << human_units(static_cast<double>(s.parameters) * 4, "B")
           << ")\n"
           << "  FLOPs per micro-batch: F " << human_units(s.flops_f, "") << ", B " << human_units(s.flops_b, "")
           << ", W " << human_units(s.flops_w, "") << "\n"
           << "  memory: " << memory_line(s) << "\n"
           << "  predicted per micro-batch: F " << ms(s.f_s) << ", B " << ms(s.b_s) << ", W " << ms(s.w_s)
           << ", links " << ms(s.transfer_s) << "; "
           << fixed(slowest > 0 ? 100.0 * (s.compute_s() + s.transfer_s) / slowest : 100.0, 1)
           << "% of the slowest stage\n";
      for (const CrossingReport& t : s.sends) {
        text << "  sends " << t.name << " " << t.shape << " (" << human_units(t.bytes, "B") << " per micro-batch";
        if (t.seconds > 0) text << ", " << ms(t.seconds) << " predicted";
        text << ")\n";
      }
      for (const std::string& note : s.notes) text << "  " << note << "\n";
    }
  }
  return text.str();
}

std::string render_report_html(const CompileReport& report) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << escape(report.title)
    << "</title>\n<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
       "th{background:#f0f0f0}td.n{text-align:right}pre{background:#f7f7f7;padding:8px;white-space:pre-wrap}"
       ".over{color:#b00020;font-weight:bold}</style></head><body>\n"
    << "<h1>" << escape(report.title) << "</h1>\n<pre>" << escape(report.header);
  if (!report.devices.empty()) h << "devices: " << escape(report.devices) << "\n";
  h << "</pre>\n";
  if (!report.cluster_why.empty()) h << "<h2>Clusters</h2>\n<pre>" << escape(report.cluster_why) << "</pre>\n";
  for (const ClusterReport& cl : report.clusters) {
    h << "<h2>Cluster " << cl.index << "</h2>\n<p>" << cl.stages.size() << " stage(s), split by "
      << escape(cl.method) << "</p>\n";
    if (!cl.order.empty()) h << "<p>Pipeline order: " << escape(cl.order) << "</p>\n";
    h << svg_chart(cl);
    h << "<table><tr><th>stage</th><th>node</th><th>machine</th><th>address</th><th>ops</th><th>parameters</th>"
         "<th>FLOPs F / B / W</th><th>params</th><th>grads</th><th>optimizer</th><th>activations (in flight)</th>"
         "<th>memory / capacity</th><th>F</th><th>B</th><th>W</th><th>links</th></tr>\n";
    for (const StageReport& s : cl.stages) {
      const bool over = s.capacity > 0 && s.mem_total() > s.capacity;
      h << "<tr><td class=\"n\">" << s.stage << "</td><td>" << escape(s.node_id) << "</td><td>" << escape(s.machine)
        << "</td><td>" << escape(s.address) << "</td><td class=\"n\">" << s.ops << "</td><td class=\"n\">"
        << s.parameters << "</td><td class=\"n\">" << human_units(s.flops_f, "") << " / " << human_units(s.flops_b, "")
        << " / " << human_units(s.flops_w, "") << "</td><td class=\"n\">" << human_units(s.mem_params, "B")
        << "</td><td class=\"n\">" << human_units(s.mem_grads, "B") << "</td><td class=\"n\">"
        << human_units(s.mem_optimizer, "B") << "</td><td class=\"n\">" << human_units(s.mem_activations, "B") << " ("
        << s.in_flight << ")</td><td class=\"n" << (over ? " over" : "") << "\">" << human_units(s.mem_total(), "B")
        << " / " << (s.capacity > 0 ? human_units(s.capacity, "B") : std::string("?")) << "</td><td class=\"n\">"
        << ms(s.f_s) << "</td><td class=\"n\">" << ms(s.b_s) << "</td><td class=\"n\">" << ms(s.w_s)
        << "</td><td class=\"n\">" << ms(s.transfer_s) << "</td></tr>\n";
    }
    h << "</table>\n<table><tr><th>from stage</th><th>tensor</th><th>shape</th><th>bytes per micro-batch</th>"
         "<th>predicted transfer</th></tr>\n";
    for (const StageReport& s : cl.stages)
      for (const CrossingReport& t : s.sends)
        h << "<tr><td class=\"n\">" << s.stage << "</td><td>" << escape(t.name) << "</td><td>" << escape(t.shape)
          << "</td><td class=\"n\">" << human_units(t.bytes, "B") << "</td><td class=\"n\">"
          << (t.seconds > 0 ? ms(t.seconds) : std::string("-")) << "</td></tr>\n";
    h << "</table>\n";
  }
  h << "</body></html>\n";
  return h.str();
}

}  // namespace ravnest::cg
