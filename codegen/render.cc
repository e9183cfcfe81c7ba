// Renders a simulated step as a text grid or an SVG timeline (declared in
// simulator.h). Both show every F/B/W event of the result and nothing else.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "codegen/simulator.h"

namespace ravnest::cg {
namespace {

constexpr int kMaxColumns = 400;

char letter(rt::InstrOp op) { return op == rt::InstrOp::kF ? 'F' : op == rt::InstrOp::kB ? 'B' : 'W'; }

const char* colour(rt::InstrOp op) {
  return op == rt::InstrOp::kF ? "#6fa8dc" : op == rt::InstrOp::kB ? "#93c47d" : "#f6b26b";
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

std::string render_text(const SimResult& r, double unit) {
  if (!(unit > 0)) {
    unit = 0;
    for (const SimEvent& e : r.events)
      if (e.end > e.start && (unit == 0 || e.end - e.start < unit)) unit = e.end - e.start;
    if (unit == 0) unit = 1;
  }
  unit = std::max(unit, r.makespan / kMaxColumns);
  const int columns = static_cast<int>(std::ceil(r.makespan / unit - 1e-9));
  std::vector<std::string> rows(static_cast<size_t>(r.num_stages), std::string(static_cast<size_t>(columns), '.'));
  for (const SimEvent& e : r.events)
    for (int c = std::max(0, static_cast<int>(e.start / unit) - 1); c < columns; ++c) {
      double mid = (c + 0.5) * unit;
      if (mid >= e.end) break;
      if (mid >= e.start) rows[static_cast<size_t>(e.stage)][static_cast<size_t>(c)] = letter(e.instr.op);
    }
  std::ostringstream out;
  for (int s = 0; s < r.num_stages; ++s) {
    char label[32];
    std::snprintf(label, sizeof label, "stage %-3d |", s);
    out << label << rows[static_cast<size_t>(s)] << "|\n";
  }
  return out.str();
}

std::string render_svg(const SimResult& r) {
  const double left = 70, top = 50, row_h = 28, width = 1000;
  const double scale = r.makespan > 0 ? width / r.makespan : 1;
  const double height = top + r.num_stages * row_h + 50;
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + width + 20 << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  out << "<text x=\"" << left << "\" y=\"22\" font-size=\"15\">" << r.kind << ": " << r.num_stages << " stages, "
      << r.microbatches << " micro-batches; makespan " << fixed(r.makespan, 3) << ", bubble ratio "
      << fixed(100 * r.bubble_ratio, 1) << "% (steady-state " << fixed(100 * r.steady_bubble_ratio, 1)
      << "%)</text>\n";
  for (int s = 0; s < r.num_stages; ++s) {
    double y = top + s * row_h;
    out << "<text x=\"8\" y=\"" << y + row_h * 0.65 << "\">stage " << s << "</text>\n"
        << "<rect x=\"" << left << "\" y=\"" << y + 2 << "\" width=\"" << width << "\" height=\"" << row_h - 4
        << "\" fill=\"#e6e6e6\"/>\n";
  }
  for (const SimEvent& e : r.events) {
    double x = left + e.start * scale, w = (e.end - e.start) * scale, y = top + e.stage * row_h;
    out << "<rect x=\"" << x << "\" y=\"" << y + 2 << "\" width=\"" << w << "\" height=\"" << row_h - 4
        << "\" fill=\"" << colour(e.instr.op) << "\" stroke=\"#333\" stroke-width=\"0.5\"><title>" << letter(e.instr.op)
        << " " << e.instr.microbatch << ": " << e.start << " - " << e.end << "</title></rect>\n";
    if (w >= 12)
      out << "<text x=\"" << x + w / 2 << "\" y=\"" << y + row_h * 0.65 << "\" text-anchor=\"middle\">"
          << e.instr.microbatch << "</text>\n";
  }
  double ly = top + r.num_stages * row_h + 20;
  const std::pair<const char*, const char*> legend[] = {
      {"F (forward)", colour(rt::InstrOp::kF)},
      {"B (input gradient)", colour(rt::InstrOp::kB)},
      {"W (weight gradient)", colour(rt::InstrOp::kW)},
      {"idle", "#e6e6e6"}};
  double lx = left;
  for (const auto& [name, fill] : legend) {
    out << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"14\" height=\"14\" fill=\"" << fill
        << "\" stroke=\"#333\" stroke-width=\"0.5\"/><text x=\"" << lx + 18 << "\" y=\"" << ly + 11 << "\">" << name
        << "</text>\n";
    lx += 160;
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace ravnest::cg
