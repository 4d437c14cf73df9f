! herald from Fortran, through ISO_C_BINDING: herald_init and herald_finalize
! (collective, like MPI_Init and MPI_Finalize) and where each rank stands.
! Launching tasks and registering code go through the same C functions.
!
!   gfortran examples/embed-fortran/app.f90 $(pkg-config --libs herald) -o app
!   herald run -n 3 -- ./app
program app
  use iso_c_binding
  implicit none
  interface
    integer(c_int) function herald_init(argc, argv) bind(C, name="herald_init")
      import :: c_int, c_ptr
      type(c_ptr), value :: argc, argv
    end function
    integer(c_int) function herald_finalize() bind(C, name="herald_finalize")
      import :: c_int
    end function
    integer(c_int32_t) function herald_node_id() bind(C, name="herald_node_id")
      import :: c_int32_t
    end function
    integer(c_int32_t) function herald_node_count() bind(C, name="herald_node_count")
      import :: c_int32_t
    end function
  end interface

  ! Collective, like MPI_Init; herald reads no arguments.
  if (herald_init(c_null_ptr, c_null_ptr) /= 0) stop 1
  print '(a, i0, a, i0)', 'fortran: rank ', herald_node_id(), ' of ', herald_node_count()
  ! Collective: returns once every rank has called it.
  if (herald_finalize() /= 0) stop 1
end program
