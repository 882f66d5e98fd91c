# clang-tidy with the root .clang-tidy on the project's own sources (core/, views/, app/) while they
# compile: each TU is checked right before it is compiled, and a finding fails its compile step
# (WarningsAsErrors). Tests, benchmarks and third-party code are not checked. docs/decisions.md #28.
#
# Two things LibTorch needs:
# - no precompiled header: clang reads GCC's cmake_pch.hxx.gch beside the forced include and stops
#   ("not a PCH file"), so core/CMakeLists.txt skips the PCH when this is on;
# - the TUs of the targets that include LibTorch (moeatlas_engine, moeatlas_train) are parsed against
#   libc++: with libstdc++ 12 in C++20, clang (14 and 16 alike) instantiates std::vector<c10::IValue>'s
#   constexpr destructor while IValue is still incomplete (ATen/core/List.h) and rejects LibTorch 1.13's
#   headers. GCC, which builds the code, is unaffected; the checks see the same project code.
find_program(MOEATLAS_CLANG_TIDY_EXE NAMES clang-tidy-14 clang-tidy)
if(NOT MOEATLAS_CLANG_TIDY_EXE)
  message(FATAL_ERROR "MOEATLAS_CLANG_TIDY is ON but clang-tidy is not installed "
                      "(Debian: apt-get install clang-tidy libc++-14-dev, as packaging/setup.sh test does)")
endif()
set(MOEATLAS_CLANG_TIDY_LIBCXX_TARGETS moeatlas_engine moeatlas_train)

# Sets CXX_CLANG_TIDY on every library and executable defined under the given source directories.
function(moeatlas_enable_clang_tidy)
  set(dirs ${ARGN})
  set(targets)
  while(dirs)
    list(POP_FRONT dirs dir)
    get_property(sub DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
    get_property(own DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
    list(APPEND dirs ${sub})
    list(APPEND targets ${own})
  endwhile()
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(STATIC_LIBRARY|SHARED_LIBRARY|OBJECT_LIBRARY|EXECUTABLE)$")
      continue()
    endif()
    # Compiler warnings are GCC's to judge (MOEATLAS_WARNINGS_AS_ERRORS); clang's own, which clang-tidy
    # would turn into errors under -Werror, are not what this check is for.
    set(tidy ${MOEATLAS_CLANG_TIDY_EXE} --quiet --extra-arg=-Wno-error)
    if(target IN_LIST MOEATLAS_CLANG_TIDY_LIBCXX_TARGETS)
      list(APPEND tidy --extra-arg=-stdlib=libc++)
    endif()
    set_target_properties(${target} PROPERTIES CXX_CLANG_TIDY "${tidy}")
  endforeach()
endfunction()
