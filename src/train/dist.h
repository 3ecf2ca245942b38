/* dist.h - data-parallel training across processes with MPI.
 *
 * `mpirun -np N mnemo train ...` starts N ranks; each computes the gradient
 * of its share of the step's windows, the gradients are summed with one
 * MPI_Allreduce a step, and every rank takes the same optimizer step, so the
 * parameters stay identical everywhere. Without mpirun (or in a build without
 * MPI: `make` leaves it out when Open MPI's development files are absent)
 * there is one rank and every call below is a no-op.
 *
 * A rank that dies makes MPI abort the whole job (its default error
 * handler), so a lost process is a loud failure, never a hang or a silently
 * smaller run; --resume then continues from the last checkpoint with any N.
 */
#ifndef MN_DIST_H
#define MN_DIST_H

#include <stdint.h>

/* Joins the job when started by mpirun (Open MPI's or PMI's environment);
 * otherwise stays a single rank. A program started by mpirun from a build
 * without MPI is refused, so N copies never train the same windows alone. */
int mn_dist_init(void);
void mn_dist_finalize(void);
int mn_dist_rank(void);
int mn_dist_size(void);
/* 1 when this build has MPI. */
int mn_dist_built_with_mpi(void);

/* Ends the whole job at once with status code (a failed rank must not leave
 * the others waiting in a collective); returns only in a single run. */
void mn_dist_abort(int code);
/* Waits for every rank. */
int mn_dist_barrier(void);

/* In-place sums over the ranks (identical results on every rank). */
int mn_dist_sum_f32(float *buf, int64_t n);
int mn_dist_sum_f64(double *buf, int n);

#endif
