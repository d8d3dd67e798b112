// sparse_cg.cpp - compressed sparse row (CSR) matrices and a preconditioned conjugate-gradient solver.
//
// The demo assembles the 2-D Poisson problem -laplace(u) = f on the unit square with a five-point
// stencil, solves it with Jacobi-preconditioned CG, and compares against the known exact solution
// u(x, y) = g(x) g(y) with g(t) = t (1 - t) e^t. (sin(pi x) sin(pi y) would be a poor test: it is an
// eigenvector of the discrete operator, so CG finishes in one step.) Halving the grid spacing should
// cut the error by about four, which the program checks, since the scheme is second-order accurate.
//
//   g++ -std=c++17 -O2 -Wall -Wextra sparse_cg.cpp -o sparse_cg && ./sparse_cg

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace sparse {

using Vector = std::vector<double>;

// Row-major CSR storage: the nonzeros of row i are values[row_start[i] .. row_start[i + 1]).
struct CsrMatrix {
  std::int64_t n_rows = 0;
  std::int64_t n_cols = 0;
  std::vector<std::int64_t> row_start;  // n_rows + 1 entries
  std::vector<std::int64_t> col_index;  // one per nonzero, sorted within each row
  std::vector<double> values;           // one per nonzero

  std::int64_t n_nonzeros() const { return static_cast<std::int64_t>(values.size()); }
};

// Builds a CSR matrix from (row, col, value) triplets. Duplicates are summed, which is exactly
// what finite-element assembly needs.
CsrMatrix from_triplets(std::int64_t n_rows, std::int64_t n_cols,
                        std::vector<std::tuple<std::int64_t, std::int64_t, double>> triplets) {
  for (const auto& [r, c, v] : triplets) {
    if (r < 0 || r >= n_rows || c < 0 || c >= n_cols)
      throw std::out_of_range("triplet (" + std::to_string(r) + ", " + std::to_string(c) + ") outside matrix");
  }
  std::sort(triplets.begin(), triplets.end(), [](const auto& a, const auto& b) {
    return std::tie(std::get<0>(a), std::get<1>(a)) < std::tie(std::get<0>(b), std::get<1>(b));
  });
  CsrMatrix m;
  m.n_rows = n_rows;
  m.n_cols = n_cols;
  m.row_start.assign(static_cast<std::size_t>(n_rows) + 1, 0);
  for (std::size_t i = 0; i < triplets.size(); ++i) {
    const auto& [r, c, v] = triplets[i];
    bool same_as_previous = !m.col_index.empty() && i > 0 && std::get<0>(triplets[i - 1]) == r &&
                            std::get<1>(triplets[i - 1]) == c;
    if (same_as_previous) {
      m.values.back() += v;
      continue;
    }
    m.col_index.push_back(c);
    m.values.push_back(v);
    ++m.row_start[static_cast<std::size_t>(r) + 1];
  }
  std::partial_sum(m.row_start.begin(), m.row_start.end(), m.row_start.begin());
  return m;
}

// y = A x
void multiply(const CsrMatrix& a, const Vector& x, Vector& y) {
  if (static_cast<std::int64_t>(x.size()) != a.n_cols) throw std::invalid_argument("multiply: size mismatch");
  y.assign(static_cast<std::size_t>(a.n_rows), 0.0);
  for (std::int64_t i = 0; i < a.n_rows; ++i) {
    double sum = 0.0;
    for (std::int64_t k = a.row_start[i]; k < a.row_start[i + 1]; ++k) sum += a.values[k] * x[a.col_index[k]];
    y[i] = sum;
  }
}

double dot(const Vector& a, const Vector& b) {
  double sum = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// y += alpha * x
void axpy(double alpha, const Vector& x, Vector& y) {
  for (std::size_t i = 0; i < x.size(); ++i) y[i] += alpha * x[i];
}

Vector diagonal(const CsrMatrix& a) {
  Vector d(static_cast<std::size_t>(a.n_rows), 0.0);
  for (std::int64_t i = 0; i < a.n_rows; ++i)
    for (std::int64_t k = a.row_start[i]; k < a.row_start[i + 1]; ++k)
      if (a.col_index[k] == i) d[i] = a.values[k];
  return d;
}

bool is_symmetric(const CsrMatrix& a, double tolerance = 1e-12) {
  if (a.n_rows != a.n_cols) return false;
  for (std::int64_t i = 0; i < a.n_rows; ++i) {
    for (std::int64_t k = a.row_start[i]; k < a.row_start[i + 1]; ++k) {
      std::int64_t j = a.col_index[k];
      // Binary search for (j, i) in row j.
      auto first = a.col_index.begin() + a.row_start[j];
      auto last = a.col_index.begin() + a.row_start[j + 1];
      auto it = std::lower_bound(first, last, i);
      if (it == last || *it != i) return false;
      if (std::fabs(a.values[static_cast<std::size_t>(it - a.col_index.begin())] - a.values[k]) > tolerance)
        return false;
    }
  }
  return true;
}

struct CgResult {
  int iterations = 0;
  double relative_residual = 0.0;
  bool converged = false;
};

// Solves A x = b for symmetric positive definite A with Jacobi (diagonal) preconditioning.
// x holds the initial guess on entry and the solution on exit.
CgResult conjugate_gradient(const CsrMatrix& a, const Vector& b, Vector& x, double tolerance, int max_iterations) {
  const std::size_t n = b.size();
  Vector inv_diag = diagonal(a);
  for (double& d : inv_diag) {
    if (d <= 0.0) throw std::domain_error("Jacobi preconditioner needs a positive diagonal");
    d = 1.0 / d;
  }
  Vector r(n), z(n), p(n), ap(n);
  multiply(a, x, ap);
  for (std::size_t i = 0; i < n; ++i) r[i] = b[i] - ap[i];
  for (std::size_t i = 0; i < n; ++i) z[i] = inv_diag[i] * r[i];
  p = z;
  double rz = dot(r, z);
  const double b_norm = std::sqrt(dot(b, b));
  CgResult result;
  if (b_norm == 0.0) {
    std::fill(x.begin(), x.end(), 0.0);
    result.converged = true;
    return result;
  }
  for (int it = 1; it <= max_iterations; ++it) {
    multiply(a, p, ap);
    double alpha = rz / dot(p, ap);
    axpy(alpha, p, x);
    axpy(-alpha, ap, r);
    result.iterations = it;
    result.relative_residual = std::sqrt(dot(r, r)) / b_norm;
    if (result.relative_residual < tolerance) {
      result.converged = true;
      break;
    }
    for (std::size_t i = 0; i < n; ++i) z[i] = inv_diag[i] * r[i];
    double rz_next = dot(r, z);
    double beta = rz_next / rz;
    rz = rz_next;
    for (std::size_t i = 0; i < n; ++i) p[i] = z[i] + beta * p[i];
  }
  return result;
}

}  // namespace sparse

namespace {

// Exact solution factor and its second derivative: g = t(1-t)e^t, g'' = -(t^2 + 3t)e^t.
double g(double t) { return t * (1.0 - t) * std::exp(t); }
double g_second(double t) { return -(t * t + 3.0 * t) * std::exp(t); }

// Five-point Laplacian on an m x m interior grid of the unit square with zero boundary values.
sparse::CsrMatrix poisson_matrix(int m) {
  const double h = 1.0 / (m + 1);
  const double scale = 1.0 / (h * h);
  std::vector<std::tuple<std::int64_t, std::int64_t, double>> t;
  t.reserve(static_cast<std::size_t>(5 * m * m));
  auto index = [m](int i, int j) { return static_cast<std::int64_t>(i) * m + j; };
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < m; ++j) {
      std::int64_t row = index(i, j);
      t.emplace_back(row, row, 4.0 * scale);
      if (i > 0) t.emplace_back(row, index(i - 1, j), -scale);
      if (i + 1 < m) t.emplace_back(row, index(i + 1, j), -scale);
      if (j > 0) t.emplace_back(row, index(i, j - 1), -scale);
      if (j + 1 < m) t.emplace_back(row, index(i, j + 1), -scale);
    }
  }
  return sparse::from_triplets(static_cast<std::int64_t>(m) * m, static_cast<std::int64_t>(m) * m, std::move(t));
}

// Max-norm error of the CG solution against the exact u = g(x) g(y).
double solve_and_measure(int m, bool verbose) {
  sparse::CsrMatrix a = poisson_matrix(m);
  if (!sparse::is_symmetric(a)) throw std::logic_error("Poisson matrix should be symmetric");
  const double h = 1.0 / (m + 1);
  sparse::Vector b(static_cast<std::size_t>(m) * m), exact(b.size());
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < m; ++j) {
      double x = (i + 1) * h, y = (j + 1) * h;
      exact[static_cast<std::size_t>(i) * m + j] = g(x) * g(y);
      b[static_cast<std::size_t>(i) * m + j] = -(g_second(x) * g(y) + g(x) * g_second(y));
    }
  }
  sparse::Vector u(b.size(), 0.0);
  sparse::CgResult r = sparse::conjugate_gradient(a, b, u, 1e-10, 10 * m * m);
  double max_error = 0.0;
  for (std::size_t k = 0; k < u.size(); ++k) max_error = std::max(max_error, std::fabs(u[k] - exact[k]));
  if (verbose) {
    std::printf("m = %3d  unknowns = %6d  nonzeros = %7lld  iterations = %4d  residual = %.2e  error = %.3e\n", m,
                m * m, static_cast<long long>(a.n_nonzeros()), r.iterations, r.relative_residual, max_error);
  }
  if (!r.converged) throw std::runtime_error("CG did not converge for m = " + std::to_string(m));
  return max_error;
}

}  // namespace

int main() {
  // Small sanity check of assembly: duplicates are summed and rows stay sorted.
  sparse::CsrMatrix small = sparse::from_triplets(2, 2, {{1, 1, 2.0}, {0, 1, 1.0}, {0, 0, 3.0}, {1, 1, 1.0}});
  sparse::Vector y;
  sparse::multiply(small, {1.0, 2.0}, y);
  if (small.n_nonzeros() != 3 || y[0] != 5.0 || y[1] != 6.0) {
    std::printf("assembly check failed\n");
    return 1;
  }

  double previous = 0.0;
  bool ok = true;
  for (int m : {15, 31, 63}) {
    double error = solve_and_measure(m, /*verbose=*/true);
    if (previous > 0.0) {
      double ratio = previous / error;
      std::printf("          error ratio = %.2f (expected about 4 for a second-order scheme)\n", ratio);
      if (ratio < 3.5 || ratio > 4.5) ok = false;
    }
    previous = error;
  }
  std::printf(ok ? "convergence order confirmed\n" : "unexpected convergence order\n");
  return ok ? 0 : 1;
}
