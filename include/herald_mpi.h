/*
 * herald_mpi.h: start herald on an MPI communicator of the program's.
 *
 * Needs libherald.so built with MPI support (`cargo build --release
 * --features herald-c/mpi`); include it after or instead of herald.h, with
 * mpi.h on the include path (mpicc, or `pkg-config --cflags ompi-c`).
 *
 *     int provided;
 *     MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
 *     herald_init_comm(MPI_COMM_WORLD);   // collective over the communicator
 *     ...                                 // herald.h's calls, MPI's calls
 *     herald_finalize();                  // collective; before MPI_Finalize
 *     MPI_Finalize();
 */
#ifndef HERALD_MPI_H
#define HERALD_MPI_H

#include <mpi.h>

#include "herald.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Joins the job whose nodes are the ranks of `comm` (node id = rank in `comm`),
 * like herald_init but over MPI: herald's frames travel on a duplicate of `comm`
 * (MPI_Comm_dup), so they never match the program's receives, and need no
 * secret and no port. Collective: every rank of `comm` calls it, from its main
 * thread, while no other thread calls herald.
 *
 * MPI must be initialised with MPI_THREAD_MULTIPLE: herald's progress thread
 * calls MPI while the program's threads do (otherwise HERALD_ERR_FAILED, and
 * the reason says what to do); so must it be at all (herald_init_comm never
 * initialises MPI), and `comm` must be an intracommunicator, not MPI_COMM_NULL
 * (both HERALD_ERR_FAILED, the job going on). herald never finalises an MPI it
 * did not initialise: call herald_finalize before MPI_Finalize (an MPI_Finalize
 * first makes herald stop calling MPI and lose every peer: herald_finalize then
 * fails, naming them).
 *
 * herald_init itself joins over MPI_COMM_WORLD when the process runs under an
 * MPI launcher and libherald.so has MPI support (or HERALD_TRANSPORT=mpi),
 * initialising MPI itself if the program has not (it then finalises MPI in
 * herald_finalize). HERALD_TRANSPORT=tcp keeps herald's TCP links.
 *
 * Returns HERALD_OK, or an error code whose reason is printed to standard error
 * and reported by herald_wait(0, ...) on this thread.
 */
int herald_init_comm(MPI_Comm comm);

#ifdef __cplusplus
}
#endif

#endif /* HERALD_MPI_H */
