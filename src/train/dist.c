/* dist.c - data-parallel training across processes (dist.h). */
#include "train/dist.h"

#include <stdlib.h>

#include "error.h"

#ifdef MN_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank, g_size = 1, g_mpi;

/* mpirun's launchers put these in every rank's environment */
static int under_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

int mn_dist_built_with_mpi(void) {
#ifdef MN_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

int mn_dist_init(void) {
    if (!under_mpirun() || g_mpi) return MN_OK;
#ifdef MN_HAVE_MPI
    int provided;
    /* only the main thread calls MPI; the thread pool never does */
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return mn_error(MN_EIO, "MPI_Init failed");
    g_mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    return MN_OK;
#else
    const char *n = getenv("OMPI_COMM_WORLD_SIZE");
    if (n && atoi(n) == 1) return MN_OK; /* mpirun -np 1 is a single run either way */
    return mn_error(MN_EUNSUPPORTED,
                    "started by mpirun, but this mnemo was built without MPI (install libopenmpi-dev and rebuild)");
#endif
}

void mn_dist_finalize(void) {
#ifdef MN_HAVE_MPI
    if (g_mpi) MPI_Finalize();
#endif
    g_mpi = 0, g_rank = 0, g_size = 1;
}

void mn_dist_abort(int code) {
#ifdef MN_HAVE_MPI
    if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)code;
#endif
}

int mn_dist_barrier(void) {
#ifdef MN_HAVE_MPI
    if (g_mpi && g_size > 1 && MPI_Barrier(MPI_COMM_WORLD) != MPI_SUCCESS) return mn_error(MN_EIO, "MPI_Barrier failed");
#endif
    return MN_OK;
}

int mn_dist_rank(void) { return g_rank; }
int mn_dist_size(void) { return g_size; }

int mn_dist_sum_f32(float *buf, int64_t n) {
#ifdef MN_HAVE_MPI
    /* MPI counts are int: large buffers go in pieces */
    for (int64_t o = 0; g_mpi && g_size > 1 && o < n; o += 1 << 30) {
        const int k = (int)(n - o < (1 << 30) ? n - o : (1 << 30));
        if (MPI_Allreduce(MPI_IN_PLACE, buf + o, k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            return mn_error(MN_EIO, "MPI_Allreduce failed");
    }
#else
    (void)buf, (void)n;
#endif
    return MN_OK;
}

int mn_dist_sum_f64(double *buf, int n) {
#ifdef MN_HAVE_MPI
    if (g_mpi && g_size > 1 && MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
        return mn_error(MN_EIO, "MPI_Allreduce failed");
#else
    (void)buf, (void)n;
#endif
    return MN_OK;
}
